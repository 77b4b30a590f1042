"""The ``predict`` and ``stream`` sub-commands (registered by :mod:`edgeser.cli`).

``add_predict_parser(sub)`` and ``add_stream_parser(sub)`` add them to an argparse
sub-parsers object; each sets ``func(args) -> int``. User errors raise
:class:`EdgeserError` (the main CLI prints ``edgeser: error: <msg>`` and exits 2).

``predict`` with several files reports a bad file on stderr (``edgeser: error: ...``),
goes on with the others, and exits 2 if any file failed.

The model, stream and VAD modules (onnxruntime) are imported when a command runs, not when
the parser is built: every ``edgeser`` command builds this parser.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgeser.core.errors import EdgeserError
from edgeser.core.executor import add_executor_arguments

if TYPE_CHECKING:
    from edgeser.runtime.model import Analysis


def stdout_closed() -> int:
    """The reader went away (``edgeser stream ... | head``): stop quietly, exit 0."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    finally:
        os.close(devnull)
    return 0


def _threads(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


# --------------------------------------------------------------------------- predict
def add_predict_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``edgeser predict MODEL.onnx FILES... [--json]``."""
    p = sub.add_parser(
        "predict",
        help="classify audio files with an exported model (model.onnx or model.int8.onnx)",
        description="One line per file: PATH<TAB>LABEL<TAB>label=p label=p ... (probabilities "
        "in model.json's label order), or with --json one object per line "
        '{"path", "label", "probabilities"}. Any format soundfile reads, any sample rate, '
        "stereo is downmixed. A bad file is reported on stderr and skipped; the exit status "
        "is 2 if any file failed.",
    )
    p.add_argument("model", type=Path, help="model.onnx or model.int8.onnx (model.json beside)")
    p.add_argument("files", type=Path, nargs="*", help="audio files")
    p.add_argument("--json", action="store_true", help="JSON lines output")
    p.add_argument(
        "--vad",
        choices=["silero", "webrtc"],
        default="silero",
        help="the VAD that splits inputs longer than the model's window (10 s) "
        "into speech segments and decides status=no_speech (default silero)",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        default=None,
        help="onnxruntime threads (default 2; with --manifest 1 per worker)",
    )
    archive = p.add_argument_group(
        "an archive (edgeser.runtime.batch): one Parquet row per utterance, resumable"
    )
    archive.add_argument(
        "--manifest",
        type=Path,
        default=None,
        metavar="M.csv",
        help="CSV with a path column (and utt_id, label) to score",
    )
    archive.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="preds.parquet",
        help="Parquet dataset folder to write (parts; a re-run adds the "
        "utterances missing from it)",
    )
    archive.add_argument(
        "--part-rows",
        type=_threads,
        default=None,
        metavar="N",
        help="rows per Parquet part (default 1000)",
    )
    add_executor_arguments(p, processes=True)
    p.set_defaults(func=run_predict)
    return p


def format_prediction(path: str, result: Analysis, as_json: bool) -> str:
    """One output line of ``edgeser predict``: ``PATH<TAB>LABEL<TAB>label=p ...`` (then a
    dimensional model's values) and ``status=...`` last; or one JSON object."""
    probs, dimensions = result.probabilities, result.dimensions
    if as_json:
        obj: dict[str, object] = {
            "path": path,
            "label": result.label,
            "probabilities": {k: round(v, 6) for k, v in probs.items()},
        }
        if dimensions is not None:
            obj["dimensions"] = {k: round(v, 6) for k, v in dimensions.items()}
        obj.update(
            status=result.status,
            segments=result.segments,
            speech_seconds=round(result.speech_seconds, 3),
        )
        return json.dumps(obj)
    scores = " ".join(f"{k}={v:.4f}" for k, v in probs.items())
    line = f"{path}\t{result.label}\t{scores}"
    if dimensions is not None:
        line += "\t" + " ".join(f"{k}={v:.4f}" for k, v in dimensions.items())
    return line + f"\tstatus={result.status}"


def run_predict(args: argparse.Namespace) -> int:
    if args.manifest is not None or args.out is not None:
        return _run_predict_manifest(args)
    if not args.files:
        raise EdgeserError("predict: give audio files, or --manifest M.csv --out preds.parquet")
    if args.executor != "local" or args.workers is not None:
        raise EdgeserError("--executor and --workers apply to --manifest M.csv --out preds.parquet")
    from edgeser.runtime.model import OnnxEmotionModel

    model = OnnxEmotionModel(args.model, threads=args.threads or 2, vad=args.vad)
    failed = 0
    for path in args.files:
        try:
            result = model.analyse_file(path)
        except EdgeserError as e:
            failed += 1
            print(f"edgeser: error: {e}", file=sys.stderr, flush=True)
            continue
        try:
            print(format_prediction(str(path), result, args.json), flush=True)
        except BrokenPipeError:
            return stdout_closed()
    if failed:
        if failed == len(args.files) and len(args.files) > 1:
            print(f"edgeser: error: all {failed} files failed", file=sys.stderr)
        return 2
    return 0


def _run_predict_manifest(args: argparse.Namespace) -> int:
    if args.manifest is None or args.out is None:
        raise EdgeserError("predict: --manifest and --out go together")
    if args.files or args.json:
        raise EdgeserError("predict: --manifest takes no audio files and no --json")
    from edgeser.runtime.batch import PART_ROWS, predict_manifest

    s = predict_manifest(
        args.model,
        args.manifest,
        args.out,
        threads=args.threads or 1,
        part_rows=args.part_rows or PART_ROWS,
    )
    again = f", {s.retried} of them failed before" if s.retried else ""
    print(
        f"{args.out}: {s.written} utterances scored ({s.errors} errors{again}), {s.skipped} "
        f"already there, {s.total} in the manifest; {s.seconds:.1f} s"
    )
    return 0


# --------------------------------------------------------------------------- stream
def add_stream_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``edgeser stream MODEL.onnx INPUT [--json] [--vad ...] ...``."""
    p = sub.add_parser(
        "stream",
        help="voice activity detection + one emotion per speech segment, as a timeline",
        description="Split INPUT into speech segments with a VAD and classify each as soon "
        "as it closes: 'start end label confidence' lines (seconds from the start), or JSON "
        "lines with --json. INPUT is an audio file of any length (read in blocks) or '-' for "
        "raw 16 kHz 16-bit little-endian mono PCM on stdin.",
    )
    p.add_argument(
        "model",
        type=Path,
        help="model.onnx or model.int8.onnx (model.json beside); with --server, leave it out",
    )
    p.add_argument(
        "input",
        nargs="?",
        default=None,
        help="audio file, or - for raw 16 kHz s16le mono PCM on stdin",
    )
    p.add_argument("--json", action="store_true", help="JSON lines output")
    p.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="classify on an `edgeser serve` server (ws://HOST:PORT/v1/stream) "
        "instead of a local model: the same output",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --server: the API key (first line of FILE; default $EDGESER_API_KEY)",
    )
    p.add_argument(
        "--vad",
        choices=["silero", "webrtc"],
        default="silero",
        help="silero (default; WebRTC if the silero-vad package is missing) or webrtc",
    )
    p.add_argument(
        "--aggressiveness",
        type=int,
        choices=[0, 1, 2, 3],
        default=2,
        help="WebRTC VAD aggressiveness (default 2)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="speech probability threshold (default 0.5; ends below threshold-0.15)",
    )
    p.add_argument(
        "--min-speech",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="drop segments shorter than this (default 0.25)",
    )
    p.add_argument(
        "--min-silence",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="silence that closes a segment (default 0.1)",
    )
    p.add_argument(
        "--speech-pad",
        type=float,
        default=0.03,
        metavar="SECONDS",
        help="padding added on each side of a segment (default 0.03)",
    )
    p.add_argument(
        "--max-segment",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a segment this long is closed and classified (default 10)",
    )
    p.add_argument(
        "--block", type=float, default=0.5, metavar="SECONDS", help="input read size (default 0.5)"
    )
    p.add_argument("--threads", type=_threads, default=2, help="onnxruntime threads (default 2)")
    p.set_defaults(func=run_stream)
    return p


def run_stream(args: argparse.Namespace) -> int:
    """``edgeser stream MODEL INPUT`` on this machine (``--server``: see
    :func:`edgeser.serve.cli.run_stream_command`, which the command line calls)."""
    if getattr(args, "server", None) is not None:
        raise EdgeserError("stream --server runs through edgeser.serve.cli.run_stream_command")
    if args.input is None:
        raise EdgeserError("stream: give MODEL and INPUT (or --server URL INPUT)")
    if args.api_key_file is not None:
        raise EdgeserError("--api-key-file goes with --server")
    from edgeser.runtime.model import OnnxEmotionModel
    from edgeser.runtime.stream import file_blocks, pcm_blocks, stream_predictions
    from edgeser.runtime.vad import SegmenterConfig, make_vad

    config = SegmenterConfig(
        threshold=args.threshold,
        min_speech=args.min_speech,
        min_silence=args.min_silence,
        speech_pad=args.speech_pad,
        max_segment=args.max_segment,
    ).validate()
    if not 0.0 < args.block <= 60.0:
        raise EdgeserError(f"--block must be in (0, 60] seconds, got {args.block}")
    model = OnnxEmotionModel(args.model, threads=args.threads)
    vad = make_vad(args.vad, aggressiveness=args.aggressiveness)
    if args.input == "-":
        if sys.stdin is None or getattr(sys.stdin, "closed", False):
            raise EdgeserError(
                "stream -: standard input is closed (pipe raw 16 kHz 16-bit "
                "mono PCM into it, or give an audio file)"
            )
        blocks = pcm_blocks(sys.stdin.buffer, args.block)
    else:
        blocks = file_blocks(args.input, args.block)
    try:
        for seg in stream_predictions(model, blocks, vad, config):
            print(seg.to_json() if args.json else seg.to_line(), flush=True)
    except BrokenPipeError:
        return stdout_closed()
    return 0
