"""``edgeser export MODEL_DIR --out DIR``: ONNX export of a trained model folder
(:func:`edgeser.exporting.exporter.export_model`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``export MODEL_DIR --out DIR [--no-int8] [--calibration FILES...]``."""
    from edgeser.exporting.exporter import VARIANTS

    parser: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="export a trained model to ONNX (float32 + 8-bit) with model.json",
        description="Export a trained model folder (e.g. RUN_DIR/production) to DIR/model.onnx "
        "(float32), DIR/model.int8.onnx and DIR/model.json. The graph takes a 16 kHz waveform "
        "batch and returns class probabilities.",
    )
    parser.add_argument("model_dir", type=Path, help="trained model folder (model.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the 8-bit model")
    parser.add_argument(
        "--calibration",
        nargs="+",
        type=Path,
        default=None,
        metavar="FILE",
        help="audio files to calibrate the 8-bit model (default: synthetic speech)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--encoder",
        default=None,
        metavar="SOURCE",
        help="the encoder to load (hub id, local folder, .ckpt) instead of "
        "the one model.json records; needed when that one is a path outside "
        "MODEL_DIR (a folder from elsewhere cannot make edgeser read a file "
        "you did not name)",
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        choices=sorted(VARIANTS),
        help="also write an optional variant (repeatable): "
        + "; ".join(f"{k}: {v[1]}" for k, v in VARIANTS.items()),
    )
    parser.set_defaults(func=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from edgeser.exporting.exporter import export_model

    paths = export_model(
        args.model_dir,
        args.out,
        int8=args.int8,
        calibration=args.calibration,
        opset=args.opset,
        extra_variants=args.variants,
        encoder_source=args.encoder,
    )
    parts = [f"{p} ({p.stat().st_size / 1e6:.1f} MB)" for k, p in paths.items() if k != "json"]
    print(f"exported {args.model_dir}: " + ", ".join(parts) + f", {paths['json']}")
    return 0


#: In the order ``edgeser --help`` lists them.
COMMANDS = (add_export,)
