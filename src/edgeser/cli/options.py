"""Argument helpers the sub-commands share: value types (positive numbers, ports,
booleans), the training config's ``--<field>`` options, ``--executor``, the server
options of ``web`` and ``serve``, and the options ``predict`` and ``stream`` share.

Only the standard library and light edgeser modules are imported here: every command
builds these options, the torch-free ``predict`` and ``stream`` included.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeser.config import (
    PAPER_DEFAULTS,
    TrainConfig,
    config_fields,
    load_config,
    option_type,
    parse_bool,
)
from edgeser.core.executor import ExecutorSpec, import_ray, parse_executor
from edgeser.models.registry import MODELS

#: The voice activity detectors ``predict`` and ``stream`` offer.
VAD_CHOICES = ["silero", "webrtc"]


# --------------------------------------------------------------------------- value types
def positive_int(text: str) -> int:
    """An integer >= 1 (``--threads``, ``--workers``, ``--part-rows``)."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def positive(kind: type) -> Callable[[str], Any]:
    """A ``kind`` (int or float) > 0, with a one-line message for text that is not one."""

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    return parse


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0-65535, got {n}")
    return n


# --------------------------------------------------------------------------- training config
_METAVAR = {int: "INT", float: "FLOAT", str: "STR"}


def _model_defaults_text(name: str) -> str:
    """``"1e-3; light-sernet: 0.0001"``: the paper's value and the models that differ."""
    others = [
        f"{m}: {spec.defaults[name]}"
        for m, spec in MODELS.items()
        if name in spec.defaults and spec.defaults[name] != PAPER_DEFAULTS[name]
    ]
    return "; ".join([str(PAPER_DEFAULTS[name]), *others])


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one ``--<field>`` option per config field (default: unset)."""

    parser.add_argument("--config", type=Path, default=None, help="YAML file with config values")
    group = parser.add_argument_group("training config (defaults: the paper's values)")
    for f in config_fields():
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is None and f.name in PAPER_DEFAULTS:
            default = _model_defaults_text(f.name)
        kind = option_type(f.type)
        # a boolean option alone means true (--dimensions); --dimensions false also works
        flag = {"nargs": "?", "const": True} if kind is parse_bool else {}
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"cfg_{f.name}",
            type=kind,
            default=None,
            metavar=(
                _METAVAR.get(kind, "VALUE")
                if f.name in PAPER_DEFAULTS
                else type(default).__name__.upper()
                if default is not None
                else "VALUE"
            ),
            help=f"(default: {default})",
            **flag,
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--<field>`` values as config keys (``None``: not given)."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config named by ``--config`` with the ``--<field>`` overrides applied."""
    return load_config(getattr(args, "config", None), config_overrides(args))


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """What every training command ends with: ``--executor`` and the config options."""
    add_executor_arguments(parser)
    add_config_arguments(parser)


# --------------------------------------------------------------------------- executor
def add_executor_arguments(parser: argparse.ArgumentParser, *, processes: bool = False) -> None:
    """``--executor``, ``--workers`` and (feature extraction) ``--worker-threads``;
    ``processes``: without Ray, ``--workers`` counts local processes."""
    group = parser.add_argument_group("where the work runs")
    group.add_argument(
        "--executor",
        default="local",
        metavar="local|ray[:ADDRESS]",
        help="local (default), ray (a Ray instance on this machine), ray:auto "
        "(the cluster this machine belongs to) or ray:HOST:PORT; results are "
        "the same on every executor",
    )
    local = "local processes or " if processes else ""
    group.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"{local}Ray actors at once (default: as many as the CPUs hold)",
    )
    if not processes:
        group.add_argument(
            "--worker-threads",
            type=positive_int,
            default=None,
            metavar="T",
            help="torch threads per Ray actor (default: this process's, which "
            "keeps the features bitwise identical to a local run's)",
        )


def executor_from_args(args: argparse.Namespace) -> ExecutorSpec | None:
    """The :class:`ExecutorSpec` of a command's ``--executor`` options (``None``: the
    command has none)."""
    if not hasattr(args, "executor"):
        return None
    spec = parse_executor(
        args.executor, workers=args.workers, worker_threads=getattr(args, "worker_threads", None)
    )
    if spec.is_ray and importlib.util.find_spec("ray") is None:  # fail before any work
        import_ray()
    return spec


# --------------------------------------------------------------------------- servers
def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """``--host``, ``--port``, ``--allow-host`` and the connection limits."""
    from edgeser.web.server import Limits

    p.add_argument("--port", type=port, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients may use in the URL besides IP addresses and "
        "localhost (repeatable; '*' allows any: exposes the server to DNS "
        "rebinding)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=Limits.max_connections,
        metavar="N",
        help=f"connections served at once (default {Limits.max_connections}; more get 503)",
    )


def add_api_key_file(p: argparse.ArgumentParser, help: str) -> None:
    """``--api-key-file FILE`` (``stream --server``'s key, ``serve``'s keys)."""
    p.add_argument("--api-key-file", type=Path, default=None, metavar="FILE", help=help)


# --------------------------------------------------------------------------- runtime
def add_model_argument(p: argparse.ArgumentParser, help: str) -> None:
    """The exported model a runtime command runs."""
    p.add_argument("model", type=Path, help=help)


def add_json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="JSON lines output")


def add_vad_argument(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--vad", choices=VAD_CHOICES, default="silero", help=help)
