"""The ``edgeser`` command line. Each sub-command is a thin wrapper over a library
function; it holds no logic of its own beyond argument parsing and reporting.

Errors the user can fix (bad paths, wrong corpora, invalid splits, unreadable
audio) print one line, ``edgeser: error: ...``, and exit with status 2.

Each command imports its stage inside its handler: ``edgeser predict`` and ``stream`` run
in the torch-free runtime install (numpy, soundfile, soxr, onnxruntime), so building the
parser must not import torch, transformers or pandas, and no command pays for another's.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edgeser import __version__
from edgeser.core.errors import EdgeserError
from edgeser.core.executor import add_executor_arguments, executor_from_args, use_executor

log = logging.getLogger("edgeser")

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- prepare
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="describe a corpus as a manifest CSV (one row per utterance)",
        description="Write a manifest for IEMOCAP, CREMA-D, RAVDESS, or your own CSV "
        "(columns path,label,speaker[,session]).",
    )
    p.add_argument("corpus", choices=["iemocap", "cremad", "ravdess", "csv"])
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
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from edgeser.data.manifest import validate_manifest, write_manifest
    from edgeser.data.recipes import prepare

    df = prepare(
        args.corpus,
        args.root,
        all_labels=args.all_labels,
        ravdess_calm=args.ravdess_calm,
        name=args.name,
    )
    if df.empty:
        raise EdgeserError(f"{args.root}: no usable utterances found")
    validate_manifest(df, check_paths=False, allow_unlabelled=args.all_labels)
    write_manifest(df, args.out)
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
def _add_validate(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
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
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic corpus in a real corpus's layout")
    p.add_argument("corpus", choices=["iemocap", "cremad", "ravdess"])
    p.add_argument("out", type=Path, help="corpus root to write")
    p.add_argument(
        "--scale",
        choices=["small", "paper"],
        default="small",
        help="small (demo/tests) or paper (the real corpora's sizes)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from edgeser.data.synth import synthesize_corpus

    root = synthesize_corpus(args.corpus, args.out, scale=args.scale, seed=args.seed, progress=True)
    print(f"{root}: synthetic {args.corpus} ({args.scale}, seed {args.seed})")
    return 0


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    from edgeser.config import add_config_arguments

    p = sub.add_parser(
        "train",
        help="train a model on manifests (validation: held-out speakers)",
        description="Train on every row of the given manifests. Model selection uses "
        "--val-speakers whole speakers held out of the first manifest (0: keep the last "
        "epoch). Writes OUT/model.safetensors + model.json.",
    )
    p.add_argument("manifests", type=Path, nargs="+", help="manifest CSVs (from prepare)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="feature cache (default: OUT/cache)"
    )
    add_executor_arguments(p)
    add_config_arguments(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from edgeser.config import config_from_args
    from edgeser.experiments.runs import train_on_manifests

    cfg = config_from_args(args)
    rec = train_on_manifests(cfg, args.manifests, args.out, cache_dir=args.cache_dir, progress=True)
    m = rec.get("val_metrics")
    extra = f"; validation UA {100 * m['ua']:.1f} %" if m else ""
    print(f"{args.out / 'model.safetensors'}: trained on {rec['n_train']} utterances{extra}")
    return 0


# --------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from edgeser.config import add_config_arguments

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
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument(
        "--trained",
        type=Path,
        default=None,
        metavar="DIR",
        help="a trained model folder (model.safetensors + model.json) to evaluate",
    )
    add_executor_arguments(p)
    add_config_arguments(p)  # includes --model NAME
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from edgeser.config import config_from_args
    from edgeser.experiments.runs import evaluate_loso, evaluate_model

    trained = args.trained
    if trained is None and args.cfg_model is not None and Path(args.cfg_model).is_dir():
        log.warning(
            "--model DIR is deprecated for a trained model folder: use --trained %s "
            "(--model names a model to train)",
            args.cfg_model,
        )
        trained, args.cfg_model = Path(args.cfg_model), None
    if (trained is not None) == (args.protocol is not None):
        raise EdgeserError(
            "give either --trained DIR (a trained model folder) or --protocol loso [--model NAME]"
        )
    if trained is not None and not trained.is_dir():
        raise EdgeserError(f"--trained {trained}: no such model folder")
    progress = True
    if trained is not None:
        source = args.cfg_encoder if args.cfg_encoder not in (None, "auto") else None
        res = evaluate_model(
            trained,
            args.corpus,
            args.out,
            cache_dir=args.cache_dir,
            progress=progress,
            encoder_source=source,
        )
        m = res["metrics"]
    else:
        cfg = config_from_args(args)
        res = evaluate_loso(
            cfg,
            args.corpus,
            args.out,
            folds=args.folds,
            cache_dir=args.cache_dir,
            progress=progress,
        )
        m = next(iter(res["loso"].values()))["mean"]
    print(
        f"{args.out / 'results.json'}: WA {100 * m['wa']:.1f} %, UA {100 * m['ua']:.1f} %, "
        f"macro-F1 {100 * m['macro_f1']:.1f} %"
    )
    return 0


# --------------------------------------------------------------------------- reproduce
def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from edgeser.config import add_config_arguments

    p = sub.add_parser(
        "reproduce",
        help="the paper's whole protocol: LOSO x2, production model, cross-corpus",
        description="Corpus arguments take a corpus root or a manifest CSV.",
    )
    p.add_argument("--iemocap", type=Path, required=True)
    p.add_argument("--cremad", type=Path, default=None)
    p.add_argument("--ravdess", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="feature cache, shared across runs (default: OUT/cache)",
    )
    add_executor_arguments(p)
    add_config_arguments(p)
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from edgeser.config import config_from_args
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
def _add_compare(sub: argparse._SubParsersAction) -> None:
    from edgeser.config import add_config_arguments

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
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--no-export", action="store_true", help="skip ONNX export and timing")
    p.add_argument("--latency-seconds", type=float, default=3.0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="a config value for one model only, e.g. light-sernet:epochs=100 (repeatable)",
    )
    add_executor_arguments(p)
    add_config_arguments(p)
    p.set_defaults(func=_run_compare)


def _per_model_settings(items: Sequence[str]) -> dict[str, dict[str, object]]:
    """``["light-sernet:epochs=100", ...]`` -> ``{"light-sernet": {"epochs": 100}}``."""
    from edgeser.config import parse_config_value

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


def _run_compare(args: argparse.Namespace) -> int:
    from edgeser.config import config_from_args
    from edgeser.experiments.compare import compare
    from edgeser.experiments.reproduce import load_corpus

    if args.cfg_model is not None:
        raise EdgeserError("compare takes --models NAME,NAME,...; not --model")
    cfg = config_from_args(args)
    if args.iemocap is not None:
        load_corpus("iemocap", args.iemocap, args.out)
        corpus = args.out / "manifests" / "iemocap.csv"
    else:
        corpus = args.corpus
    extra = None
    if args.cremad is not None:
        load_corpus("cremad", args.cremad, args.out)
        extra = args.out / "manifests" / "cremad.csv"
    compare(
        args.models.split(","),
        corpus,
        args.out,
        base=cfg,
        folds=args.folds,
        extra_train=extra,
        cache_dir=args.cache_dir,
        export=not args.no_export,
        latency_seconds=args.latency_seconds,
        progress=True,
        overrides=_per_model_settings(args.set),
    )
    print(f"table: {args.out / 'compare.md'}")
    return 0


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from edgeser.experiments.demo import demo_config, run_demo

    cfg = demo_config(args.seed, dimensions=args.dimensions, seeds=args.seeds)
    report = run_demo(args.out, seed=args.seed, progress=True, config=cfg)
    print(f"report: {report}")
    return 0


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeser",
        description="Speech emotion recognition small enough for a phone.",
    )
    parser.add_argument("--version", action="version", version=f"edgeser {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from edgeser.exporting.exporter import add_export_parser
    from edgeser.runtime.cli import add_predict_parser, add_stream_parser
    from edgeser.serve.cli import add_serve_parser, run_stream_command
    from edgeser.web.server import add_web_parser

    def add_stream(s: argparse._SubParsersAction) -> None:  # local, or via --server
        add_stream_parser(s).set_defaults(func=run_stream_command)

    for add in (
        _add_prepare,
        _add_validate,
        _add_synth,
        _add_train,
        _add_evaluate,
        _add_reproduce,
        _add_compare,
        _add_demo,
        add_export_parser,
        add_predict_parser,
        add_stream,
        add_web_parser,
        add_serve_parser,
    ):
        add(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("numba", "matplotlib", "PIL", "urllib3", "filelock", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        spec = executor_from_args(args)
        if spec is None:
            return int(args.func(args) or 0)
        with use_executor(spec):  # where features are encoded (edgeser.features.extract)
            return int(args.func(args) or 0)
    except EdgeserError as e:
        print(f"edgeser: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeser: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
