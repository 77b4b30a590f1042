"""ARM64, the CPU of every phone, emulated by qemu (``tools/arm64.py``): onnxruntime's ARM
8-bit kernels (NEON on ``cortex-a53``, dot product on ``cortex-a76``, ``i8mm`` on ``max``)
are other code than the x86 ones the exporter's saturation bound was derived for. Here
every integer operator of a small exported model meets its worst-case input on each, and
the whole model answers as it does on x86. (The full-size model on real speech:
``bench/arm_agreement.py``; emulation is too slow for the suite.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeser.exporting.saturation import saturation_report, worst_case_model
from edgeser.runtime.model import OnnxEmotionModel
from edgeser.testing import export_tiny_model, tone

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("arm64", ROOT / "tools" / "arm64.py")
arm64 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arm64)

GUEST = r"""
import ctypes, json, sys
import numpy as np
import onnxruntime as ort
from edgeser.runtime.model import OnnxEmotionModel

job = json.loads(open(sys.argv[1]).read())
libc = ctypes.CDLL("libc.so.6")
libc.getauxval.restype = ctypes.c_ulong
hw, hw2 = libc.getauxval(16), libc.getauxval(26)
out = {"dotprod": bool(hw & (1 << 20)), "i8mm": bool(hw2 & (1 << 13)), "probes": {}}
for name, probe in job["probes"].items():
    session = ort.InferenceSession(open(probe["model"], "rb").read(),
                                   providers=["CPUExecutionProvider"])
    codes = np.load(probe["codes"])
    out["probes"][name] = session.run(None, {"x": codes})[0].astype(float).tolist()
waves = [np.load(p) for p in job["waves"]]
for kind, path in job["models"].items():
    model = OnnxEmotionModel(path, threads=2)
    out[kind] = model.run(waves).tolist()
print(json.dumps(out))
"""


def _skip_reason() -> str | None:
    missing = arm64.missing_tools()
    if missing:
        return (
            f"ARM64 emulation needs {', '.join(missing)} (apt-get install "
            "qemu-user-static debootstrap)"
        )
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(scope="module")
def arm_job(tmp_path_factory):
    """The ARM64 environment, a small exported model, its integer operators' worst-case
    probes (exact answers computed here) and the x86 outputs to compare with."""
    try:
        arm64.build()
    except (subprocess.CalledProcessError, RuntimeError) as e:
        pytest.skip(f"could not build the ARM64 environment ({e})")
    root = tmp_path_factory.mktemp("arm")
    paths = export_tiny_model(root)
    integer_ops = saturation_report(paths["int8"])
    probes, exact = {}, {}
    for i, node in enumerate(_static_nodes(paths["int8"])):
        data, codes, exact[node] = worst_case_model(paths["int8"], node)
        (root / f"probe{i}.onnx").write_bytes(data)
        np.save(root / f"probe{i}.npy", codes)
        probes[node] = {"model": str(root / f"probe{i}.onnx"), "codes": str(root / f"probe{i}.npy")}
    waves = [tone(1.2, freq=190.0, seed=2)]  # 2 chunks of the extractor's loop
    for i, w in enumerate(waves):
        np.save(root / f"wave{i}.npy", w)
    models = {k: str(paths[k]) for k in ("float32", "int8", "int8_ort")}
    job = {
        "probes": probes,
        "waves": [str(root / f"wave{i}.npy") for i in range(len(waves))],
        "models": models,
    }
    (root / "job.json").write_text(json.dumps(job))
    (root / "guest.py").write_text(GUEST)
    x86 = {k: OnnxEmotionModel(p, threads=2).run(waves) for k, p in models.items()}
    assert len(probes) == len(integer_ops)  # every integer operator is probed
    return {"root": root, "exact": exact, "x86": x86}


def _static_nodes(path: Path) -> list[str]:
    """The statically quantised MatMul/Conv nodes of a QDQ file (both inputs dequantised):
    onnxruntime's integer operators."""
    import onnx

    from edgeser.exporting.onnx_utils import walk_graphs

    names = []
    for graph in walk_graphs(onnx.load(str(path)).graph):
        made = {o: n.op_type for n in graph.node for o in n.output}
        names += [
            n.name
            for n in graph.node
            if n.op_type in ("MatMul", "Conv")
            and all(made.get(i) == "DequantizeLinear" for i in n.input[:2])
        ]
    return names


@pytest.mark.slow
def test_arm64_integer_kernels_are_exact_and_the_model_answers_as_on_x86(arm_job):
    """The three CPU models at once (emulation is slow: about a minute each)."""
    root = arm_job["root"]
    procs = {}
    for cpu in arm64.CPUS:
        cmd, env = arm64.command(cpu, [str(root / "guest.py"), str(root / "job.json")])
        procs[cpu] = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for cpu, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, (cpu, stderr[-3000:])
        _check(cpu, json.loads(stdout.strip().splitlines()[-1]), arm_job)


def _check(cpu: str, out: dict, arm_job: dict) -> None:
    # the emulated CPUs differ in what the 8-bit kernels dispatch on
    assert (out["dotprod"], out["i8mm"]) == {
        "cortex-a53": (False, False),
        "cortex-a76": (True, False),
        "max": (True, True),
    }[cpu]
    assert len(out["probes"]) >= 5  # linears and the extractor's 8-bit convolution
    for node, got in out["probes"].items():
        exact = arm_job["exact"][node]
        got = np.asarray(got)
        if node.endswith("/Conv"):  # uint8 codes after requantisation
            assert np.abs(got - exact).max() <= 1, (cpu, node)
        else:
            np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5, err_msg=f"{cpu} {node}")
    for kind, ref in arm_job["x86"].items():
        got = np.asarray(out[kind])
        assert (got.argmax(1) == ref.argmax(1)).all(), (cpu, kind)
        assert np.abs(got - ref).max() <= (1e-4 if kind == "float32" else 2e-3), (cpu, kind)
    print(
        f"{cpu}: {len(out['probes'])} integer operators exact on worst-case inputs; "
        f"max |Δp| vs x86: "
        + ", ".join(
            f"{k} {np.abs(np.asarray(out[k]) - r).max():.1e}" for k, r in arm_job["x86"].items()
        )
    )


def test_arm64_cpuinfo_names_each_model():
    for cpu in arm64.CPUS:
        text = arm64.cpuinfo(cpu)
        assert text.count("processor\t:") == 2 and "CPU implementer\t: 0x41" in text
        assert ("asimddp" in text) == (cpu != "cortex-a53")
        assert (" i8mm" in text) == (cpu == "max")
    assert sys.platform.startswith("linux")
