"""The CPU check behind ``precision: auto``: decided from flags, kernel level, oneDNN cap and
a micro-benchmark; the resolved value is what configs, caches and results record."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from edgeser.core import cpu
from edgeser.core.errors import EdgeserError

NATIVE = frozenset({"avx2", "avx512f", "avx512_bf16"})


def _never() -> float:
    raise AssertionError("the micro-benchmark must not run when the flags already decide")


@pytest.mark.parametrize(
    ("flags", "capability", "onednn", "slowdown", "native", "why"),
    [
        (frozenset({"avx2", "fma"}), "AVX2", None, _never, False, "no native bfloat16"),
        (frozenset({"avx512f", "avx512_vnni"}), "AVX512", None, _never, False, "no native"),
        (NATIVE, "AVX2", None, _never, False, "ATEN_CPU_CAPABILITY"),
        (NATIVE, "AVX512", "avx2", _never, False, "ONEDNN_MAX_CPU_ISA"),
        (NATIVE, "AVX512", "avx512_core", _never, False, "ONEDNN_MAX_CPU_ISA"),
        (NATIVE, "AVX512", None, lambda: 30.0, False, "30.0x float32"),
        (NATIVE, "AVX512", None, lambda: 0.6, True, "native bfloat16"),
        (NATIVE, "AVX512", "avx512_core_bf16", lambda: 0.6, True, "native"),
        (frozenset({"amx_bf16", "avx512f"}), "AVX512", None, lambda: 0.3, True, "amx_bf16"),
    ],
)
def test_bf16_decision(flags, capability, onednn, slowdown, native, why) -> None:
    check = cpu._decide_bf16(flags, capability, onednn, slowdown)
    assert check.native is native
    assert why in check.reason


def test_resolve_precision(monkeypatch, caplog) -> None:
    assert cpu.resolve_precision("fp32") == "fp32"
    with pytest.raises(EdgeserError, match="precision must be one of auto, fp32, bf16"):
        cpu.resolve_precision("fp16")
    monkeypatch.setattr(cpu, "bf16_check", lambda: cpu.Bf16Check(True, "native"))
    assert cpu.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(cpu, "bf16_check", lambda: cpu.Bf16Check(False, "no bf16 here"))
    monkeypatch.setattr(cpu, "_warned_bf16", False)
    assert cpu.resolve_precision("auto") == "fp32"
    with caplog.at_level(logging.WARNING, logger="edgeser.core.cpu"):
        assert cpu.resolve_precision("bf16") == "bf16"  # still honoured, with one warning
        assert cpu.resolve_precision("bf16") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no bf16 here" in warnings[0]


def test_config_records_the_resolved_precision(monkeypatch) -> None:
    from edgeser.config import TrainConfig, load_config

    monkeypatch.setattr(cpu, "bf16_check", lambda: cpu.Bf16Check(False, "no bf16 here"))
    assert TrainConfig().precision == "fp32"
    assert load_config(None, {"precision": "auto"}).to_dict()["precision"] == "fp32"
    monkeypatch.setattr(cpu, "bf16_check", lambda: cpu.Bf16Check(True, "native"))
    assert TrainConfig().precision == "bf16"
    assert TrainConfig(precision="fp32").precision == "fp32"
    with pytest.raises(EdgeserError, match="precision"):
        TrainConfig(precision="half")


def test_emulated_avx2_resolves_to_fp32_on_any_cpu() -> None:
    """Under the AVX2 caps, PyTorch takes its AVX2 kernels and ``auto`` picks fp32, on an
    AVX2 machine and on an AVX-512/bf16 one alike."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    code = (
        "import json, torch; from edgeser.core import cpu; "
        "print(json.dumps([torch.backends.cpu.get_cpu_capability(), "
        "cpu.resolve_precision('auto'), cpu.hardware_summary()['emulation']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    capability, precision, emulation = json.loads(out.stdout.strip().splitlines()[-1])
    assert capability == "AVX2" and precision == "fp32"
    assert emulation == {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def test_hardware_summary_names_the_cpu() -> None:
    summary = cpu.hardware_summary()
    assert set(cpu.REPORTED_FLAGS) == set(summary["flags"])
    assert summary["precision_auto"] in ("fp32", "bf16")
    assert summary["precision_auto"] == ("bf16" if summary["bf16_native"] else "fp32")
    text = cpu.format_hardware(summary)
    assert text.startswith("CPU: ") and "torch " in text and "precision auto -> " in text
    info = cpu.cpu_info()
    if info.flags:  # Linux: the flags are the kernel's
        assert summary["flags"]["avx2"] == ("avx2" in info.flags)
