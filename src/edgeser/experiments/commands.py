"""What the training-side commands do between parsing and reporting, as functions with
typed arguments: ``edgeser prepare`` (:func:`prepare_manifest`), ``edgeser evaluate``
(:func:`evaluate_command`) and ``edgeser compare`` (:func:`compare_command`).

Each stage is imported inside the function that needs it, so that ``prepare`` does not
load what ``evaluate`` trains with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeser.core.errors import EdgeserError

if TYPE_CHECKING:
    import pandas as pd

    from edgeser.config import TrainConfig

log = logging.getLogger("edgeser")


def prepare_manifest(
    corpus: str,
    root: Path,
    out: Path,
    *,
    all_labels: bool = False,
    ravdess_calm: str | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """Describe ``corpus`` at ``root`` as a manifest, check it and write it to ``out``;
    returns it (``attrs["skipped"]``: the files left out, by reason)."""
    from edgeser.data.manifest import validate_manifest, write_manifest
    from edgeser.data.recipes import prepare

    df = prepare(corpus, root, all_labels=all_labels, ravdess_calm=ravdess_calm, name=name)
    if df.empty:
        raise EdgeserError(f"{root}: no usable utterances found")
    validate_manifest(df, check_paths=False, allow_unlabelled=all_labels)
    write_manifest(df, out)
    return df


def evaluate_command(
    corpus: Path,
    out: Path,
    *,
    trained: Path | None = None,
    protocol: str | None = None,
    folds: int = 5,
    cache_dir: Path | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Evaluate the trained model folder ``trained`` on ``corpus``, or (``protocol``
    ``"loso"``) train and test the configured model on ``folds`` speaker-disjoint folds;
    returns the headline metrics (``wa``, ``ua``, ``macro_f1``; LOSO: the fold mean).

    The config is the file ``config_file`` with ``overrides`` (config keys; ``None``:
    unset) applied, built only for LOSO. A ``model`` override naming a folder is taken
    as ``trained`` (deprecated); with a trained folder, an ``encoder`` override other
    than ``auto`` is the encoder to load."""
    from edgeser.config import load_config
    from edgeser.experiments.runs import evaluate_loso, evaluate_model

    overrides = dict(overrides or {})
    model = overrides.get("model")
    if trained is None and model is not None and Path(model).is_dir():
        log.warning(
            "--model DIR is deprecated for a trained model folder: use --trained %s "
            "(--model names a model to train)",
            model,
        )
        trained, overrides["model"] = Path(model), None
    if (trained is not None) == (protocol is not None):
        raise EdgeserError(
            "give either --trained DIR (a trained model folder) or --protocol loso [--model NAME]"
        )
    if trained is not None:
        if not trained.is_dir():
            raise EdgeserError(f"--trained {trained}: no such model folder")
        encoder = overrides.get("encoder")
        res = evaluate_model(
            trained,
            corpus,
            out,
            cache_dir=cache_dir,
            progress=progress,
            encoder_source=encoder if encoder not in (None, "auto") else None,
        )
        return dict(res["metrics"])
    cfg = load_config(config_file, overrides)
    res = evaluate_loso(cfg, corpus, out, folds=folds, cache_dir=cache_dir, progress=progress)
    return dict(next(iter(res["loso"].values()))["mean"])


def compare_command(
    models: Sequence[str],
    out: Path,
    *,
    base: TrainConfig,
    iemocap: Path | None = None,
    corpus: Path | None = None,
    cremad: Path | None = None,
    folds: int = 5,
    cache_dir: Path | None = None,
    export: bool = True,
    latency_seconds: float = 3.0,
    overrides: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> Path:
    """:func:`~edgeser.experiments.compare.compare` on ``iemocap`` (a root or manifest,
    prepared into ``out/manifests``: one fold per session) or on the manifest ``corpus``,
    with ``cremad`` (likewise prepared) added to training only; returns ``compare.md``."""
    from edgeser.experiments.compare import compare
    from edgeser.experiments.reproduce import load_corpus

    if (iemocap is None) == (corpus is None):
        raise EdgeserError("compare: give one of --iemocap and --corpus")
    if iemocap is not None:
        load_corpus("iemocap", iemocap, out)
        corpus = out / "manifests" / "iemocap.csv"
    extra = None
    if cremad is not None:
        load_corpus("cremad", cremad, out)
        extra = out / "manifests" / "cremad.csv"
    compare(
        list(models),
        corpus,
        out,
        base=base,
        folds=folds,
        extra_train=extra,
        cache_dir=cache_dir,
        export=export,
        latency_seconds=latency_seconds,
        progress=progress,
        overrides=overrides,
    )
    return out / "compare.md"
