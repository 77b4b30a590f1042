"""The runtime commands: ``predict`` and ``stream`` (locally, or ``stream --server`` on an
``edgeser serve`` server).

They run in the torch-free runtime install: the model, stream and VAD modules
(onnxruntime) are imported when a command runs, not when the parser is built.

``predict`` with several files reports a bad file on stderr (``edgeser: error: ...``),
goes on with the others, and exits 2 if any file failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeser.cli.options import (
    add_api_key_file,
    add_executor_arguments,
    add_json_argument,
    add_model_argument,
    add_vad_argument,
    positive_int,
)
from edgeser.core.errors import EdgeserError


# --------------------------------------------------------------------------- predict
def add_predict(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    add_model_argument(p, "model.onnx or model.int8.onnx (model.json beside)")
    p.add_argument("files", type=Path, nargs="*", help="audio files")
    add_json_argument(p)
    add_vad_argument(
        p,
        "the VAD that splits inputs longer than the model's window (10 s) "
        "into speech segments and decides status=no_speech (default silero)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
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
        type=positive_int,
        default=None,
        metavar="N",
        help="rows per Parquet part (default 1000)",
    )
    add_executor_arguments(p, processes=True)
    p.set_defaults(func=run_predict)
    return p


def run_predict(args: argparse.Namespace) -> int:
    if args.manifest is not None or args.out is not None:
        return _run_predict_manifest(args)
    if not args.files:
        raise EdgeserError("predict: give audio files, or --manifest M.csv --out preds.parquet")
    if args.executor != "local" or args.workers is not None:
        raise EdgeserError("--executor and --workers apply to --manifest M.csv --out preds.parquet")
    from edgeser.runtime.model import OnnxEmotionModel
    from edgeser.runtime.output import format_prediction, stdout_closed

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
def _seconds(p: argparse.ArgumentParser, flag: str, default: float, help: str) -> None:
    p.add_argument(flag, type=float, default=default, metavar="SECONDS", help=help)


def add_stream(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``edgeser stream MODEL.onnx INPUT [--json] [--vad ...] ...``."""
    p = sub.add_parser(
        "stream",
        help="voice activity detection + one emotion per speech segment, as a timeline",
        description="Split INPUT into speech segments with a VAD and classify each as soon "
        "as it closes: 'start end label confidence' lines (seconds from the start), or JSON "
        "lines with --json. INPUT is an audio file of any length (read in blocks) or '-' for "
        "raw 16 kHz 16-bit little-endian mono PCM on stdin.",
    )
    add_model_argument(
        p, "model.onnx or model.int8.onnx (model.json beside); with --server, leave it out"
    )
    p.add_argument(
        "input",
        nargs="?",
        default=None,
        help="audio file, or - for raw 16 kHz s16le mono PCM on stdin",
    )
    add_json_argument(p)
    p.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="classify on an `edgeser serve` server (ws://HOST:PORT/v1/stream) "
        "instead of a local model: the same output",
    )
    add_api_key_file(p, "with --server: the API key (first line of FILE; default $EDGESER_API_KEY)")
    add_vad_argument(p, "silero (default; WebRTC if the silero-vad package is missing) or webrtc")
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
    _seconds(p, "--min-speech", 0.25, "drop segments shorter than this (default 0.25)")
    _seconds(p, "--min-silence", 0.1, "silence that closes a segment (default 0.1)")
    _seconds(p, "--speech-pad", 0.03, "padding added on each side of a segment (default 0.03)")
    _seconds(p, "--max-segment", 10.0, "a segment this long is closed and classified (default 10)")
    _seconds(p, "--block", 0.5, "input read size (default 0.5)")
    p.add_argument(
        "--threads", type=positive_int, default=2, help="onnxruntime threads (default 2)"
    )
    p.set_defaults(func=run_stream)
    return p


def run_stream(args: argparse.Namespace) -> int:
    """``edgeser stream``: through the server at ``--server`` (the same output as the local
    command), else on this machine."""
    if args.server is not None:
        if args.input is not None:
            raise EdgeserError("stream --server URL INPUT takes no MODEL (the server has it)")
        if args.vad != "silero":
            raise EdgeserError("stream --server: the server's VAD is Silero (no --vad)")
        from edgeser.serve.client import run_remote_stream

        options = {
            name: getattr(args, name)
            for name in ("threshold", "min_speech", "min_silence", "speech_pad", "max_segment")
        }
        return run_remote_stream(
            args.server,
            str(args.model),  # with --server the one positional is the INPUT
            options=options,
            api_key_file=args.api_key_file,
            as_json=args.json,
        )
    if args.input is None:
        raise EdgeserError("stream: give MODEL and INPUT (or --server URL INPUT)")
    if args.api_key_file is not None:
        raise EdgeserError("--api-key-file goes with --server")
    from edgeser.runtime.model import OnnxEmotionModel
    from edgeser.runtime.output import stdout_closed
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


#: In the order ``edgeser --help`` lists them.
COMMANDS = (add_predict, add_stream)
