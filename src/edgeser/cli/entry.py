"""The top parser, logging and dispatch: :func:`build_parser` assembles the sub-commands
of :mod:`~edgeser.cli.training`, :mod:`~edgeser.cli.export`, :mod:`~edgeser.cli.runtime`
and :mod:`~edgeser.cli.serving`; :func:`main` runs the chosen one and turns an
:class:`EdgeserError` into one ``edgeser: error: ...`` line and exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edgeser import __version__
from edgeser.cli import export, runtime, serving, training
from edgeser.cli.options import executor_from_args
from edgeser.core.errors import EdgeserError
from edgeser.core.executor import use_executor


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
    for add in (*training.COMMANDS, *export.COMMANDS, *runtime.COMMANDS, *serving.COMMANDS):
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
