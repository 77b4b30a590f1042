"""An ARM64 Python that runs edgeser's runtime on this x86 machine, under qemu user-mode
emulation: the phone's CPU, emulated (correctness only; emulated timings mean nothing).

``build`` (``make arm-env``) makes, under ``.arm64/`` (or ``EDGESER_ARM64``):

- ``root/``: Debian bookworm arm64 from ``debootstrap --foreign --variant=minbase`` with
  Python 3.11. The first stage only unpacks the required packages, so every downloaded
  ``.deb`` (Python's among them) is unpacked with ``dpkg-deb -x``; nothing runs as arm64
  during the build;
- ``site/``: the aarch64 wheels of numpy, soundfile, soxr and this machine's onnxruntime
  version, from PyPI (``pip install --platform manylinux2014_aarch64 --only-binary=:all:
  --target``);
- ``cpu-<model>/``: one root per emulated CPU model (hard links to ``root/``) with its own
  ``/proc/cpuinfo``: qemu 7.2 passes the host's x86 file through, and onnxruntime's
  cpuinfo crashes on it; qemu reads ``-L`` prefixed paths first.

``run`` executes a Python script there: ``QEMU_CPU=<model> qemu-aarch64-static -L
cpu-<model> root/usr/bin/python3.11 SCRIPT`` with ``site/`` and this checkout's ``src/`` on
``PYTHONPATH``. The CPU models pick onnxruntime's 8-bit kernels: ``cortex-a53`` (NEON
only), ``cortex-a76`` (dot product, ``sdot``/``udot``) and ``max`` (also ``i8mm``).

Needs Debian's ``qemu-user-static`` and ``debootstrap`` (``.ci/run`` installs them) and the
Debian and PyPI registries. Hand-written: no tool does these steps together.

    python tools/arm64.py build
    python tools/arm64.py run --cpu cortex-a76 script.py [ARGS...]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The CPU models the tests and benchmarks run: kernel classes of onnxruntime's ARM64 QGEMM.
CPUS = ("cortex-a53", "cortex-a76", "max")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PYTHON_DEBS = "python3.11-minimal,libpython3.11-minimal,libpython3.11-stdlib,python3.11"
PLATFORMS = (
    "manylinux2014_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux_2_28_aarch64",
    "manylinux_2_31_aarch64",
)
_FEATURES = {
    "cortex-a53": ("0x0", "0xd03", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a76": (
        "0x4",
        "0xd0b",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
        "asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    ),
    "max": (
        "0x0",
        "0xd49",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
        "cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm "
        "dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm "
        "svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh rng bti",
    ),
}


def home() -> Path:
    """Where the environment lives: ``EDGESER_ARM64``, else ``.arm64/`` in the checkout."""
    return Path(os.environ.get("EDGESER_ARM64") or ROOT / ".arm64")


def missing_tools() -> list[str]:
    """The host programs ``build`` and ``run`` need that are not installed."""
    return [t for t in ("qemu-aarch64-static", "debootstrap", "dpkg-deb") if not shutil.which(t)]


def cpuinfo(cpu: str) -> str:
    """An aarch64 ``/proc/cpuinfo`` for two cores of ``cpu``."""
    variant, part, features = _FEATURES[cpu]
    core = (
        f"BogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\n"
        "CPU revision\t: 1\n\n"
    )
    return "".join(f"processor\t: {i}\n{core}" for i in range(2))


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__.split("+")[0]


def build(where: Path | None = None, log=print) -> Path:
    """Build the environment (idempotent: a finished one is kept); returns its folder."""
    where = where or home()
    done = where / ".built"
    want = f"{SUITE} onnxruntime=={_onnxruntime_version()}\n"
    if done.is_file() and done.read_text() == want:
        return where
    missing = missing_tools()
    if missing:
        raise RuntimeError(
            f"missing {', '.join(missing)} (apt-get install qemu-user-static debootstrap)"
        )
    where.mkdir(parents=True, exist_ok=True)
    with open(where / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time
        if done.is_file() and done.read_text() == want:
            return where
        root = where / "root"
        if not (root / "usr" / "bin" / "python3.11").is_file():
            shutil.rmtree(root, ignore_errors=True)
            log(f"debootstrap arm64 {SUITE} (first stage) into {root}")
            subprocess.run(
                [
                    "debootstrap",
                    "--arch=arm64",
                    "--foreign",
                    "--variant=minbase",
                    f"--include={PYTHON_DEBS}",
                    SUITE,
                    str(root),
                    MIRROR,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            debs = sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb"))
            log(f"unpacking {len(debs)} packages")
            for deb in debs:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            for deb in debs:
                deb.unlink()
        site = where / "site"
        shutil.rmtree(site, ignore_errors=True)
        log(f"aarch64 wheels into {site}")
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *platforms,
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--only-binary=:all:",
                "--target",
                str(site),
                "numpy",
                f"onnxruntime=={_onnxruntime_version()}",
                "soundfile",
                "soxr",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cpu in CPUS:
            target = where / f"cpu-{cpu}"
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["cp", "-al", str(root), str(target)], check=True)
            proc = target / "proc"
            shutil.rmtree(proc, ignore_errors=True)
            proc.mkdir()
            (proc / "cpuinfo").write_text(cpuinfo(cpu), encoding="ascii")
        done.write_text(want)
    return where


def command(cpu: str, argv: list[str], where: Path | None = None) -> tuple[list[str], dict]:
    """The command line and environment that run ``python3.11 ARGV...`` on ``cpu``."""
    if cpu not in CPUS:
        raise ValueError(f"cpu must be one of {', '.join(CPUS)}")
    where = where or home()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(where),
        "LANG": "C.UTF-8",
        "QEMU_CPU": cpu,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": f"{where / 'site'}:{ROOT / 'src'}",
    }
    qemu = shutil.which("qemu-aarch64-static") or "qemu-aarch64-static"
    return [
        qemu,
        "-L",
        str(where / f"cpu-{cpu}"),
        str(where / "root" / "usr" / "bin" / "python3.11"),
        *argv,
    ], env


def run(
    cpu: str,
    argv: list[str],
    *,
    timeout: float = 1800,
    where: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python3.11 ARGV...`` emulated on ``cpu`` (output captured as text)."""
    cmd, env = command(cpu, argv, where)
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("build", help="build the environment (make arm-env)")
    r = sub.add_parser("run", help="run a Python script on an emulated ARM64 CPU")
    r.add_argument("--cpu", choices=CPUS, default="cortex-a76")
    r.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.what == "build":
        print(build())
        return 0
    cmd, env = command(args.cpu, args.argv)
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.run(cmd, env=env, check=False).returncode
    return 130


if __name__ == "__main__":
    sys.exit(main())
