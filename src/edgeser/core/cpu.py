"""What this CPU computes fast, and the encoder arithmetic (``precision``) that follows.

x86 CPUs differ in what they run fast. bfloat16 matrix products are native only with
``avx512_bf16`` or AMX (``amx_bf16``); elsewhere PyTorch falls back to a slow emulation
(measured 15-180x slower than float32 on an AVX2-only AMD EPYC). So ``precision="auto"``
(the default everywhere) resolves once per process:

* ``"bf16"`` when bfloat16 is native *and* PyTorch really takes its native kernels: the CPU
  flags say so, PyTorch's kernel level (``torch.backends.cpu.get_cpu_capability()``, which
  ``ATEN_CPU_CAPABILITY`` caps) is AVX-512, ``ONEDNN_MAX_CPU_ISA`` does not cap oneDNN below
  its bf16 kernels, and a micro-benchmark (< 0.1 s, run only when all of that holds)
  finds a bfloat16 product no slower than twice float32 time;
* ``"fp32"`` otherwise (the direct float32 implementation of :mod:`edgeser.models.ssl`).

The resolved value, never ``"auto"``, is what feature caches, saved configs,
``results.json`` and reports record. An explicit ``"bf16"`` on a CPU without native
bfloat16 still runs, with one warning that gives the reason.

``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` make PyTorch on an AVX-512 machine take
its AVX2 paths, so the choice for the other CPU class can be checked from either class.

Only the standard library is imported at module level (torch lazily), so the light runtime
can report its hardware too.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgeser.core.errors import EdgeserError

log = logging.getLogger(__name__)

__all__ = [
    "PRECISION_CHOICES",
    "Bf16Check",
    "CPUInfo",
    "bf16_check",
    "cpu_info",
    "format_hardware",
    "hardware_summary",
    "resolve_precision",
]

#: Values ``precision`` accepts; ``"auto"`` resolves to one of the others.
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16")
#: CPU flags that mean native bfloat16 matrix products.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: CPU flags benchmarks report.
REPORTED_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) under which its bf16 kernels
# are not native.
_ONEDNN_NON_BF16_ISAS = frozenset(
    {
        "sse41",
        "avx",
        "avx2",
        "avx2_vnni",
        "avx2_vnni_2",
        "avx512_core",
        "avx512_core_vnni",
    }
)
#: A bfloat16 product slower than this many times float32 counts as emulated.
_BF16_SLOWDOWN_LIMIT = 2.0


@dataclass(frozen=True)
class CPUInfo:
    """The CPU's model name and flags (``/proc/cpuinfo``; empty flags where unreadable)."""

    model: str
    flags: frozenset[str]
    machine: str

    def has(self, flag: str) -> bool:
        return flag in self.flags


@functools.cache
def cpu_info() -> CPUInfo:
    """This machine's CPU (read once per process)."""
    model, flags = platform.processor() or "unknown", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown", "", platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return CPUInfo(model=model, flags=flags, machine=platform.machine())


@dataclass(frozen=True)
class Bf16Check:
    """Whether bfloat16 products are native here, and why (one line)."""

    native: bool
    reason: str


def _onednn_cap() -> str | None:
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").strip().lower()
        if value:
            return value
    return None


def _bf16_slowdown() -> float:
    """Time of a bfloat16 matrix product over that of the same float32 product (best of
    a few runs; about 10 ms where bfloat16 is native, < 0.1 s where it is not)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a, b = torch.randn(64, 256), torch.randn(256, 256)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        torch.mm(x, y)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                torch.mm(x, y)
            best = min(best, time.perf_counter() - start)
        times[dtype] = best
    return times[torch.bfloat16] / max(times[torch.float32], 1e-9)


def _decide_bf16(
    flags: frozenset[str],
    capability: str,
    onednn_cap: str | None,
    slowdown: Callable[[], float],
) -> Bf16Check:
    """The decision of :func:`bf16_check` from its inputs (``slowdown`` is called only
    when everything else says native)."""
    if not flags & NATIVE_BF16_FLAGS:
        return Bf16Check(False, "this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16)")
    if not capability.upper().startswith("AVX512"):
        return Bf16Check(
            False,
            f"PyTorch runs its {capability} kernels here "
            "(ATEN_CPU_CAPABILITY), which have no native bfloat16",
        )
    if onednn_cap is not None and onednn_cap in _ONEDNN_NON_BF16_ISAS:
        return Bf16Check(
            False,
            f"oneDNN is capped at {onednn_cap} (ONEDNN_MAX_CPU_ISA), below its bfloat16 kernels",
        )
    ratio = float(slowdown())
    if ratio > _BF16_SLOWDOWN_LIMIT:
        return Bf16Check(False, f"a bfloat16 product measured {ratio:.1f}x float32 time here")
    return Bf16Check(
        True,
        f"native bfloat16 ({', '.join(sorted(flags & NATIVE_BF16_FLAGS))}; "
        f"bfloat16 product {ratio:.2f}x float32 time)",
    )


@functools.cache
def bf16_check() -> Bf16Check:
    """Whether this process runs bfloat16 products natively (decided once per process)."""
    import torch

    return _decide_bf16(
        cpu_info().flags, torch.backends.cpu.get_cpu_capability(), _onednn_cap(), _bf16_slowdown
    )


_warned_bf16 = False


def resolve_precision(precision: str) -> str:
    """``"auto"`` -> ``"bf16"`` or ``"fp32"`` for this process; ``"fp32"``/``"bf16"`` are
    returned as given (``"bf16"`` without native bfloat16 warns once, with the reason)."""
    global _warned_bf16
    if precision not in PRECISION_CHOICES:
        raise EdgeserError(
            f"precision must be one of {', '.join(PRECISION_CHOICES)}; got {precision!r}"
        )
    if precision == "fp32":
        return precision
    check = bf16_check()
    if precision == "auto":
        resolved = "bf16" if check.native else "fp32"
        log.debug("precision auto -> %s: %s", resolved, check.reason)
        return resolved
    if not check.native and not _warned_bf16:
        _warned_bf16 = True
        log.warning(
            "precision bf16 requested, but %s: bfloat16 will be slow here "
            "(precision auto picks fp32 on this CPU)",
            check.reason,
        )
    return precision


def hardware_summary(*, with_torch: bool = True) -> dict[str, object]:
    """The hardware facts benchmarks print: CPU model, relevant flags, core count, torch's
    kernel level and bfloat16 verdict (unless ``with_torch`` is False, for benchmarks of
    the torch-free runtime), onnxruntime's version (where installed)."""
    info = cpu_info()
    out: dict[str, object] = {
        "cpu": info.model,
        "machine": info.machine,
        "cores": os.cpu_count(),
        "flags": {flag: info.has(flag) for flag in REPORTED_FLAGS},
    }
    env = {
        k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ
    }
    if env:
        out["emulation"] = env
    try:
        if not with_torch:
            raise ImportError
        import torch

        out["torch"] = torch.__version__
        out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = torch.get_num_threads()
        check = bf16_check()
        out["bf16_native"] = check.native
        out["bf16_reason"] = check.reason
        out["precision_auto"] = resolve_precision("auto")
    except ImportError:
        pass
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out


def format_hardware(summary: dict[str, object] | None = None) -> str:
    """:func:`hardware_summary` as a few human-readable lines."""
    s = summary if summary is not None else hardware_summary()
    flags = s.get("flags", {})
    on = [f for f, v in flags.items() if v]  # type: ignore[union-attr]
    off = [f for f, v in flags.items() if not v]  # type: ignore[union-attr]
    lines = [
        f"CPU: {s['cpu']} ({s['machine']}, {s['cores']} cores)",
        f"flags: {' '.join(on) or '-'}; absent: {' '.join(off) or '-'}",
    ]
    if "emulation" in s:
        lines.append("emulating: " + " ".join(f"{k}={v}" for k, v in s["emulation"].items()))
    if "torch" in s:
        lines.append(
            f"torch {s['torch']} ({s['torch_capability']} kernels, "
            f"{s['torch_threads']} threads); bf16 native: {s['bf16_native']} "
            f"({s['bf16_reason']}); precision auto -> {s['precision_auto']}"
        )
    if "onnxruntime" in s:
        lines.append(f"onnxruntime {s['onnxruntime']}")
    return "\n".join(lines)
