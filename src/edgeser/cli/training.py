"""The training-side commands: ``prepare``, ``validate``, ``synth``, ``train``,
``evaluate``, ``reproduce``, ``compare`` and ``demo``.

Each ``add_*`` registers one sub-command; its handler parses nothing further than the
arguments, calls one library function (imported when the command runs) and prints one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from edgeser.cli.options import (
    add_training_arguments,
    config_from_args,
    config_overrides,
)
from edgeser.config import parse_config_value
from edgeser.core.errors import EdgeserError
from edgeser.data import corpora


def _add_run_folder(p: argparse.ArgumentParser, cache_help: str | None = None) -> None:
    """``--out`` (required) and ``--cache-dir``."""
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None, help=cache_help)


def _add_folds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", type=int, default=5)


# --------------------------------------------------------------------------- prepare
def add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="describe a corpus as a manifest CSV (one row per utterance)",
        description="Write a manifest for IEMOCAP, CREMA-D, RAVDESS, or your own CSV "
        "(columns path,label,speaker[,session]).",
    )
    p.add_argument("corpus", choices=corpora.prepare_names())
    p.add_argument(
        "root",
        type=Path,
        help="corpus root (IEMOCAP_full_release/, the folder "
        "holding AudioWAV/, the folder holding Actor_XX/), or the CSV for 'csv'",
    )
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    p.add_argument(
        "--all-labels",
        action="store_true",
        help="keep rows outside the four classes (with an empty label)",
    )
    p.add_argument(
        "--ravdess-calm",
        choices=["neutral"],
        default=None,
        help="map RAVDESS calm onto this class (default: calm is left out)",
    )
    p.add_argument("--name", default=None, help="corpus name for 'csv' (default: custom)")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from edgeser.experiments.commands import prepare_manifest

    df = prepare_manifest(
        args.corpus,
        args.root,
        args.out,
        all_labels=args.all_labels,
        ravdess_calm=args.ravdess_calm,
        name=args.name,
    )
    skipped = df.attrs.get("skipped", {})
    n_skipped = sum(len(v) for v in skipped.values())
    counts = df["label"].replace("", "(other)").value_counts().to_dict()
    counts_txt = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(
        f"{args.out}: {len(df)} utterances, {df['speaker'].nunique()} speakers "
        f"({counts_txt}); {n_skipped} skipped"
    )
    return 0


# --------------------------------------------------------------------------- validate
def add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a manifest (and optionally a split file)")
    p.add_argument("manifest", type=Path)
    p.add_argument(
        "--split",
        type=Path,
        default=None,
        help='split JSON: {part: [utt_id, ...]} or {"folds": [{part: [...]}, ...]}',
    )
    p.add_argument("--all-labels", action="store_true", help="allow rows with an empty label")
    p.add_argument("--no-paths", action="store_true", help="do not check that audio files exist")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from edgeser.data.manifest import read_manifest, validate_manifest
    from edgeser.split.validate import read_split_file, validate_split

    df = read_manifest(args.manifest)
    validate_manifest(df, check_paths=not args.no_paths, allow_unlabelled=args.all_labels)
    msg = f"{args.manifest}: {len(df)} utterances, {df['speaker'].nunique()} speakers: ok"
    if args.split is not None:
        folds = read_split_file(args.split)
        for parts in folds:
            validate_split(df, parts)
        msg += f"; {args.split}: {len(folds)} split(s), no speaker crosses a split: ok"
    print(msg)
    return 0


# --------------------------------------------------------------------------- synth
def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic corpus in a real corpus's layout")
    p.add_argument("corpus", choices=corpora.synth_names())
    p.add_argument("out", type=Path, help="corpus root to write")
    p.add_argument(
        "--scale",
        choices=["small", "paper"],
        default="small",
        help="small (demo/tests) or paper (the real corpora's sizes)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from edgeser.data.synth import synthesize_corpus

    root = synthesize_corpus(args.corpus, args.out, scale=args.scale, seed=args.seed, progress=True)
    print(f"{root}: synthetic {args.corpus} ({args.scale}, seed {args.seed})")
    return 0


# --------------------------------------------------------------------------- train
def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on manifests (validation: held-out speakers)",
        description="Train on every row of the given manifests. Model selection uses "
        "--val-speakers whole speakers held out of the first manifest (0: keep the last "
        "epoch). Writes OUT/model.safetensors + model.json.",
    )
    p.add_argument("manifests", type=Path, nargs="+", help="manifest CSVs (from prepare)")
    _add_run_folder(p, "feature cache (default: OUT/cache)")
    add_training_arguments(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from edgeser.experiments.runs import train_on_manifests

    cfg = config_from_args(args)
    rec = train_on_manifests(cfg, args.manifests, args.out, cache_dir=args.cache_dir, progress=True)
    m = rec.get("val_metrics")
    extra = f"; validation UA {100 * m['ua']:.1f} %" if m else ""
    print(f"{args.out / 'model.safetensors'}: trained on {rec['n_train']} utterances{extra}")
    return 0


# --------------------------------------------------------------------------- evaluate
def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained model on a manifest, or run speaker-independent "
        "folds on any corpus",
        description="With --trained DIR (a trained model folder): evaluate it on --corpus "
        "(cross-corpus error analysis). With --protocol loso: group the corpus's sessions "
        "(actors for RAVDESS and CREMA-D) into --folds speaker-disjoint folds and train and "
        "test --model NAME (default distilhubert; also light-sernet, pepino, hubert-base, "
        "wav2vec2-base, wavlm-base-plus) on each.",
    )
    p.add_argument("--corpus", type=Path, required=True, help="manifest CSV to evaluate on")
    p.add_argument("--protocol", choices=["loso"], default=None)
    _add_folds(p)
    _add_run_folder(p)
    p.add_argument(
        "--trained",
        type=Path,
        default=None,
        metavar="DIR",
        help="a trained model folder (model.safetensors + model.json) to evaluate",
    )
    add_training_arguments(p)  # includes --model NAME
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from edgeser.experiments.commands import evaluate_command

    m = evaluate_command(
        args.corpus,
        args.out,
        trained=args.trained,
        protocol=args.protocol,
        folds=args.folds,
        cache_dir=args.cache_dir,
        config_file=args.config,
        overrides=config_overrides(args),
    )
    print(
        f"{args.out / 'results.json'}: WA {100 * m['wa']:.1f} %, UA {100 * m['ua']:.1f} %, "
        f"macro-F1 {100 * m['macro_f1']:.1f} %"
    )
    return 0


# --------------------------------------------------------------------------- reproduce
def add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="the paper's whole protocol: LOSO x2, production model, cross-corpus",
        description="Corpus arguments take a corpus root or a manifest CSV.",
    )
    p.add_argument("--iemocap", type=Path, required=True)
    p.add_argument("--cremad", type=Path, default=None)
    p.add_argument("--ravdess", type=Path, default=None)
    _add_run_folder(p, "feature cache, shared across runs (default: OUT/cache)")
    add_training_arguments(p)
    p.set_defaults(func=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    from edgeser.experiments.reproduce import reproduce

    cfg = config_from_args(args)
    reproduce(
        cfg,
        iemocap=args.iemocap,
        cremad=args.cremad,
        ravdess=args.ravdess,
        out=args.out,
        cache_dir=args.cache_dir,
        progress=True,
    )
    print(f"report: {args.out / 'report.md'}")
    return 0


# --------------------------------------------------------------------------- compare
def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="several models through the same speaker-independent folds: one table, one plot",
        description="Train and test each model of --models on the same leak-free folds "
        "(--iemocap: one fold per session; --corpus: --folds speaker-disjoint folds), "
        "export it, time it, and write OUT/compare.md, compare.json and pareto.png.",
    )
    p.add_argument(
        "--models",
        required=True,
        help="comma-separated model names, e.g. distilhubert,pepino,light-sernet",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--iemocap", type=Path, help="IEMOCAP root or manifest CSV")
    src.add_argument("--corpus", type=Path, help="any manifest CSV")
    p.add_argument(
        "--cremad", type=Path, default=None, help="CREMA-D root or manifest, added to training only"
    )
    _add_folds(p)
    _add_run_folder(p)
    p.add_argument("--no-export", action="store_true", help="skip ONNX export and timing")
    p.add_argument("--latency-seconds", type=float, default=3.0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="a config value for one model only, e.g. light-sernet:epochs=100 (repeatable)",
    )
    add_training_arguments(p)
    p.set_defaults(func=run_compare)


def per_model_settings(items: Sequence[str]) -> dict[str, dict[str, object]]:
    """``["light-sernet:epochs=100", ...]`` -> ``{"light-sernet": {"epochs": 100}}``."""
    out: dict[str, dict[str, object]] = {}
    for item in items:
        model, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not (sep and eq and model.strip()):
            raise EdgeserError(f"--set {item!r}: expected MODEL:KEY=VALUE")
        try:
            parsed = parse_config_value(key, value)
        except EdgeserError as e:
            raise EdgeserError(f"--set {item!r}: {e}") from None
        out.setdefault(model.strip(), {})[key.strip().replace("-", "_")] = parsed
    return out


def run_compare(args: argparse.Namespace) -> int:
    from edgeser.experiments.commands import compare_command

    if args.cfg_model is not None:
        raise EdgeserError("compare takes --models NAME,NAME,...; not --model")
    table = compare_command(
        args.models.split(","),
        args.out,
        base=config_from_args(args),
        iemocap=args.iemocap,
        corpus=args.corpus,
        cremad=args.cremad,
        folds=args.folds,
        cache_dir=args.cache_dir,
        export=not args.no_export,
        latency_seconds=args.latency_seconds,
        overrides=per_model_settings(args.set),
    )
    print(f"table: {table}")
    return 0


# --------------------------------------------------------------------------- demo
def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole protocol on synthetic corpora")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dimensions",
        action="store_true",
        help="also regress arousal, valence and dominance (a second head output)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train every fold's head with seeds seed..seed+N-1 on the same "
        "features and report the spread (default: 1)",
    )
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from edgeser.experiments.demo import demo_config
    from edgeser.experiments.demo import run_demo as run

    cfg = demo_config(args.seed, dimensions=args.dimensions, seeds=args.seeds)
    report = run(args.out, seed=args.seed, progress=True, config=cfg)
    print(f"report: {report}")
    return 0


#: In the order ``edgeser --help`` lists them.
COMMANDS = (
    add_prepare,
    add_validate,
    add_synth,
    add_train,
    add_evaluate,
    add_reproduce,
    add_compare,
    add_demo,
)
