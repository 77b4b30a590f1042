"""``edgeser compare``: several models through the same leak-free protocol, one table.

For every model name (:data:`edgeser.models.registry.MODELS`) the same speaker-independent
folds are trained and tested (:func:`edgeser.experiments.runs.evaluate_loso`; IEMOCAP: one fold per
session), the first fold's model is exported to ONNX float32 + int8, and its CPU latency
is measured on the same speech-like input for every model. The outcome:

- ``compare.json`` (one entry per model: parameters, sizes on disk, latencies, real-time
  factors, WA/UA/macro-F1 mean ± sd over folds with the 95 % interval of the mean, with
  ``--seeds`` > 1 the spread over seeds, the reference figure from the paper or its
  sources, and whether the model is on the Pareto front), and ``paired``: every pair of
  models tested on the same folds and utterances (difference, its interval, p-values);
- ``compare.md`` (the same as a table, with the front marked);
- ``pareto.png`` (UA against parameter count, the front drawn).

Every model trains with its own defaults (:attr:`~edgeser.models.registry.ModelSpec.defaults`,
e.g. LIGHT-SERNET's authors' recipe) for the settings that ``base`` leaves unset; settings
``base`` sets apply to every model, ``overrides`` to one. "Parameters" counts what is
trained: encoder + head, the whole LIGHT-SERNET network, or the 356 weights of the eGeMAPS
linear classifier (openSMILE's feature extraction has none).

The Pareto front is over (parameters, UA): a model is on it when no other model has at
most as many parameters and at least its UA, one of them strictly. Latency: median of
``latency_runs`` runs after a warm-up, one utterance of ``latency_seconds`` seconds,
ONNX Runtime on the CPU (int8 model) and PyTorch float32 for every model. A model whose
encoder cannot be exported (WavLM's relative position bias) gets PyTorch figures only
and says why.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeser.config import TrainConfig
from edgeser.core.errors import EdgeserError
from edgeser.core.io import write_json, write_text
from edgeser.evaluation.plots import plot_pareto
from edgeser.evaluation.report import CI_NOTE, PAIRED_HEADER, ci_text, paired_rows
from edgeser.evaluation.uncertainty import EvalSet
from edgeser.experiments.pipeline import paired_settings
from edgeser.experiments.runs import run_loso
from edgeser.exporting.calibration import speech_like
from edgeser.exporting.exporter import export_model
from edgeser.models.families import ModelFamily
from edgeser.models.registry import FeatureEncoder, model_spec
from edgeser.runtime.session import onnx_session, pad_batch
from edgeser.training.folder import load_trained

logger = logging.getLogger(__name__)

__all__ = ["compare", "pareto_front"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each ``(cost, score)``: True when no other point has cost ≤ and score ≥, one
    strictly (lower cost and higher score are better)."""
    flags = []
    for i, (c, s) in enumerate(points):
        dominated = any(
            (c2 <= c and s2 >= s and (c2 < c or s2 > s))
            for j, (c2, s2) in enumerate(points)
            if j != i
        )
        flags.append(not dominated)
    return flags


def _median_ms(fn: Any, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(runs, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _torch_latency(
    family: ModelFamily, model: Any, encoder: FeatureEncoder, wave: np.ndarray, runs: int
) -> float:
    """PyTorch float32 milliseconds for one utterance: features + model (an SSL model on
    the plain transformers modules in float32)."""
    import torch

    model.eval()
    encoder = family.reference_encoder(encoder)

    def run() -> None:
        with torch.no_grad():
            family.forward_one(model.head, encoder.encode([wave])[0])

    return _median_ms(run, runs)


def _onnx_latency(path: Path, wave: np.ndarray, runs: int) -> float:
    session = onnx_session(path)
    feed = pad_batch([wave])
    return _median_ms(lambda: session.run(None, feed), runs)


def _num_parameters(model: Any, encoder: FeatureEncoder) -> int:
    """Parameters of the whole model: encoder (if any) + head or network. For ``egemaps``
    the linear classifier's weights and biases (88 · 4 + 4); openSMILE's fixed feature
    extraction has no trained parameters and the standardisation statistics are not
    counted (as BatchNorm's running statistics are not)."""
    n = sum(p.numel() for p in model.head.parameters())
    hf = getattr(encoder, "model", None)
    if hf is not None:
        n += sum(p.numel() for p in hf.parameters())
    return int(n)


def compare(
    models: Sequence[str],
    corpus: str | Path,
    out: str | Path,
    *,
    base: TrainConfig | None = None,
    folds: int = 5,
    extra_train: str | Path | None = None,
    cache_dir: str | Path | None = None,
    export: bool = True,
    latency_seconds: float = 3.0,
    latency_runs: int = 5,
    progress: bool = True,
    encoders: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the comparison; returns the content of ``compare.json``.

    ``base`` holds every setting but the model; ``overrides`` maps a model name to config
    values that differ for it (e.g. ``{"light-sernet": {"epochs": 100}}``: a network
    trained from scratch needs more steps than a head on frozen features); ``encoders``
    maps model names to ready encoders (tests, offline use). Each model's run lives in
    ``out/<model>/`` and resumes like any other run.
    """
    names = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not names:
        raise EdgeserError("--models is empty")
    for name in [*names, *(overrides or {})]:
        model_spec(name)  # unknown names fail before anything runs
    base = base or TrainConfig()
    out = Path(out)
    cache = Path(cache_dir) if cache_dir else out / "cache"
    wave = speech_like(latency_seconds, np.random.default_rng(0))
    rows: list[dict[str, Any]] = []
    sets: dict[str, list[EvalSet]] = {}
    for name in names:
        values = dict((overrides or {}).get(name, {}))
        family = model_spec(name).model_family
        if base.dimensions and not family.dimensions:
            logger.info("compare: %s has no dimensional output; trained on the classes only", name)
            values["dimensions"] = False
        if "feature_norm" not in values and base.feature_norm not in (
            "auto",
            *family.normalizations,
        ):
            values["feature_norm"] = "auto"  # e.g. LIGHT-SERNET: none or per-speaker BatchNorm
        # settings left unset take each model's own defaults (LIGHT-SERNET: its authors')
        cfg = base.for_model(name, **values)
        encoder = (encoders or {}).get(name)
        run_dir = out / name
        logger.info("compare: %s", name)
        res, sets[name] = run_loso(
            cfg,
            corpus,
            run_dir,
            folds=folds,
            extra_train=extra_train,
            cache_dir=cache,
            progress=progress,
            encoder=encoder,
        )
        ((setting, summary),) = res["loso"].items()
        model_dir = run_dir / "loso" / "fold1"
        model, _cfg, encoder, _meta = load_trained(model_dir, encoder)
        spec = model_spec(name)
        row: dict[str, Any] = {
            "model": name,
            "description": spec.description,
            "encoder": res["encoder"],
            "setting": setting,
            "config_overrides": (overrides or {}).get(name, {}),
            "folds": len(summary["folds"]),
            "mean": {k: summary["mean"][k] for k in ("wa", "ua", "macro_f1")},
            "std": {k: summary["std"][k] for k in ("wa", "ua", "macro_f1")},
            "ci95": summary["ci95"]["mean"],
            "seeds": _seed_spread(summary.get("seeds")),
            "dimensions": (
                {"mean": summary["dimensions"]["mean"], "std": summary["dimensions"]["std"]}
                if "dimensions" in summary
                else None
            ),
            "reference": spec.paper,
            "reference_note": spec.paper_note,
            "parameters": _num_parameters(model, encoder),
            "latency_seconds": latency_seconds,
        }
        ms = _torch_latency(family, model, encoder, wave, latency_runs)
        row["pytorch_ms"] = ms
        row["pytorch_rtf"] = ms / 1000.0 / latency_seconds
        if export:
            _export_row(row, model_dir, run_dir / "export", encoder, wave, latency_runs)
        rows.append(row)
    front = pareto_front([(r["parameters"], (r["seeds"] or r)["mean"]["ua"]) for r in rows])
    for r, f in zip(rows, front, strict=True):
        r["pareto"] = f
    doc = {
        "corpus": str(corpus),
        "extra_train": str(extra_train) if extra_train else None,
        "folds": folds,
        "models": rows,
        "seeds": base.seeds,
        "paired": paired_models(base, rows, sets),
        "random_encoders": [r["model"] for r in rows if r["encoder"].get("is_random")],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", doc)

    plot_pareto(rows, out / "pareto.png")
    write_text(out / "compare.md", _markdown(doc))
    return doc


def _seed_spread(seeds: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row's spread over seeds (``--seeds`` > 1): mean and sd over all seed x fold runs,
    sd of the fold mean across seeds, the interval of the mean."""
    if not seeds:
        return None
    return {k: seeds[k] for k in ("seeds", "runs", "mean", "sd_runs", "sd_seed_means")} | {
        "ci95": seeds["ci95"]["mean"]
    }


def paired_models(
    cfg: TrainConfig, rows: Sequence[dict[str, Any]], sets: dict[str, list[EvalSet]]
) -> list[dict[str, Any]]:
    """Every pair of models, the later against the earlier in ``--models`` order, tested
    paired on the same folds and utterances (every seed): the difference of WA/UA/macro-F1
    (B − A) with its 95 % interval and p-values (:func:`edgeser.evaluation.uncertainty.
    paired_test`)."""
    names = [r["model"] for r in rows]
    return [
        paired_settings(cfg, (a, sets[a]), (b, sets[b]), variance=False)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]


def _export_row(
    row: dict[str, Any],
    model_dir: Path,
    export_dir: Path,
    encoder: FeatureEncoder,
    wave: np.ndarray,
    runs: int,
) -> None:
    try:
        paths = export_model(model_dir, export_dir, encoder=encoder)
    except EdgeserError as e:
        row["export_error"] = str(e)
        logger.warning("compare: %s is not exportable (%s)", row["model"], e)
        return
    row["size_fp32_bytes"] = os.path.getsize(paths["float32"])
    row["size_int8_bytes"] = os.path.getsize(paths["int8"])
    for key in ("float32", "int8"):
        ms = _onnx_latency(paths[key], wave, runs)
        row[f"onnx_{key}_ms"] = ms
        row[f"onnx_{key}_rtf"] = ms / 1000.0 / row["latency_seconds"]


def _params(n: int) -> str:
    """A parameter count as the table prints it: millions, or the count when below 10k
    (eGeMAPS' classifier has 356)."""
    return f"{n:,}" if n < 10_000 else f"{n / 1e6:.2f} M"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _ccc(d: dict[str, Any] | None) -> str:
    if not d:
        return "—"
    return " / ".join(f"{d['mean'][k]['ccc']:.2f}" for k in ("arousal", "valence", "dominance"))


def _mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}"


def _markdown(doc: dict[str, Any]) -> str:
    rows = doc["models"]
    secs = rows[0]["latency_seconds"] if rows else 3.0
    lines = ["# Model comparison", ""]
    lines.append(
        f"Protocol: speaker-independent folds on `{doc['corpus']}` "
        f"({rows[0]['setting'] if rows else ''}, {doc['folds']} folds"
        + (f", `{doc['extra_train']}` added to training" if doc["extra_train"] else "")
        + "). Metrics are mean ± sd over folds, in %. Latency: one "
        f"{secs:g} s utterance on this CPU, median of several runs; RTF = "
        "processing time / audio duration. ★ = on the Pareto front of parameters "
        "vs UA" + (" (mean over all seeds)" if doc.get("seeds", 1) > 1 else "") + ". " + CI_NOTE
    )
    if doc["random_encoders"]:
        lines += [
            "",
            "> **WARNING: RANDOM ENCODER WEIGHTS** for "
            + ", ".join(doc["random_encoders"])
            + ": their accuracy figures say nothing "
            "about the pretrained models; sizes and speeds are those of the real "
            "architectures.",
        ]
    dims = any(r.get("dimensions") for r in rows)
    lines += [
        "",
        "| model | params | fp32 MB | int8 MB | PyTorch ms | ONNX int8 ms | "
        "int8 RTF | WA | UA | macro-F1 | "
        + ("CCC arousal / valence / dominance | " if dims else "")
        + "reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if dims else "") + "---|",
    ]
    for r in rows:
        mean, std = r["mean"], r["std"]
        ref = r.get("reference") or {}
        ref_txt = ", ".join(f"{k.upper()} {100 * v:.1f}" for k, v in ref.items())
        if ref_txt:
            ref_txt += f" ({r['reference_note']})"
        int8_ms = r.get("onnx_int8_ms")
        ms_txt = "—" if int8_ms is None else f"{int8_ms:.0f}"
        rtf_txt = "—" if int8_ms is None else f"{r['onnx_int8_rtf']:.3f}"
        lines.append(
            f"| {'★ ' if r['pareto'] else ''}{r['model']} | {_params(r['parameters'])} | "
            f"{_mb(r.get('size_fp32_bytes'))} | {_mb(r.get('size_int8_bytes'))} | "
            f"{r['pytorch_ms']:.0f} | {ms_txt} | {rtf_txt} | "
            + " | ".join(
                f"{_pct(mean[k])} ± {_pct(std[k])}{ci_text(r.get('ci95', {}).get(k))}"
                for k in ("wa", "ua", "macro_f1")
            )
            + (f" | {_ccc(r.get('dimensions'))}" if dims else "")
            + f" | {ref_txt or '—'} |"
        )
    tuned = [r for r in rows if r.get("config_overrides")]
    if tuned:
        lines += ["", "Settings that differ from the shared config:"] + [
            f"- {r['model']}: " + ", ".join(f"{k}={v}" for k, v in r["config_overrides"].items())
            for r in tuned
        ]
    errors = [r for r in rows if r.get("export_error")]
    if errors:
        lines += ["", "Not exported:"] + [f"- {r['model']}: {r['export_error']}" for r in errors]
    seeded = [r for r in rows if r.get("seeds")]
    if seeded:
        lines += [
            "",
            f"Over {doc['seeds']} seeds (the same features, each head retrained): "
            "mean ± sd over all seed × fold runs (%) [95 % interval of the mean]; seed "
            "sd: the sd of the fold mean from seed to seed.",
            "",
            "| model | runs | WA | UA | macro-F1 | seed sd WA / UA / macro-F1 |",
            "|---|---|---|---|---|---|",
        ]
        for r in seeded:
            sd = r["seeds"]
            lines.append(
                f"| {r['model']} | {sd['runs']} | "
                + " | ".join(
                    f"{_pct(sd['mean'][k])} ± {_pct(sd['sd_runs'][k])}{ci_text(sd['ci95'].get(k))}"
                    for k in ("wa", "ua", "macro_f1")
                )
                + " | "
                + " / ".join(_pct(sd["sd_seed_means"][k]) for k in ("wa", "ua", "macro_f1"))
                + " |"
            )
    if doc.get("paired"):
        lines += [
            "",
            "Paired differences, B − A on the same folds and test utterances"
            + (" (every seed)" if doc.get("seeds", 1) > 1 else "")
            + ": the 95 % "
            "interval of the difference from the paired bootstrap, p-values two-sided "
            "(bootstrap; approximate randomisation of A's and B's predictions per "
            "utterance). A difference is supported only when its interval excludes 0.",
            "",
        ]
        for t in doc["paired"]:
            lines += [
                f"**{t['b']}** (B) vs **{t['a']}** (A):",
                "",
                *PAIRED_HEADER,
                *paired_rows(t),
                "",
            ]
    lines += ["", "![UA vs parameters](pareto.png)", ""]
    return "\n".join(lines)
