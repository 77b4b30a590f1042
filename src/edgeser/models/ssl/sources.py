"""Encoder sources: ``random``, hub ids and aliases, local Hugging Face folders, s3prl
checkpoints (see :func:`load_encoder`)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgeser.core.errors import EdgeserError
from edgeser.models.ssl.checkpoints import describe_keys, first_line, zero_optional
from edgeser.models.ssl.configs import (
    ALIASES,
    OPTIONAL_KEYS,
    distilhubert_config,
    random_architecture,
)
from edgeser.models.ssl.encoder import Encoder, check_family, check_precision
from edgeser.models.ssl.s3prl import load_s3prl_checkpoint

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


def load_encoder(
    source: str,
    *,
    seed: int = 0,
    precision: str = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Encoder:
    """Load a frozen encoder from ``source`` (see the module docstring for the forms).

    ``seed`` only matters for ``"random"``; ``precision`` is ``"fp32"``, ``"bf16"`` or
    ``"auto"`` (float32 outputs in every case; see the module docstring); ``cache_dir``
    is the Hugging Face cache for hub ids. Raises :class:`EdgeserError` for anything a
    user can fix (wrong path, unreachable hub id, a checkpoint of another architecture).
    """
    precision = check_precision(precision)
    text = str(source).strip()
    if not text:
        raise EdgeserError("encoder source is empty")
    if text.lower() == "random":
        return random_encoder(seed=seed, precision=precision)
    if text.lower().startswith("random:"):
        arch = text.split(":", 1)[1].strip().lower()
        config, do_normalize = random_architecture(arch)
        return random_encoder(
            config,
            seed=seed,
            precision=precision,
            source=f"random:{arch}",
            do_normalize=do_normalize,
        )
    resolved = text
    path = Path(text).expanduser()
    if not path.exists() and text.lower() in ALIASES:  # an existing path wins over an alias
        resolved = ALIASES[text.lower()]
        path = Path(resolved)
    if path.exists():  # local sources are recorded as absolute paths (runs reload them)
        path = path.resolve()
    if path.is_dir():
        model, do_normalize = _load_pretrained(str(path), local=True, cache_dir=None)
        return Encoder(model, source=str(path), precision=precision, do_normalize=do_normalize)
    if path.is_file():
        if path.suffix in {".safetensors", ".json"} or path.name == "pytorch_model.bin":
            raise EdgeserError(
                f"{path}: pass the Hugging Face model folder that holds this file, not the file"
            )
        model = load_s3prl_checkpoint(path)
        return Encoder(model, source=str(path), precision=precision)
    if _HUB_ID.match(resolved) and path.suffix not in _CHECKPOINT_SUFFIXES:
        model, do_normalize = _load_pretrained(resolved, local=False, cache_dir=cache_dir)
        return Encoder(model, source=resolved, precision=precision, do_normalize=do_normalize)
    raise EdgeserError(
        f"encoder source {text!r}: no such file or folder, and not a hub id (owner/name); "
        f"use 'random', one of {', '.join(sorted(ALIASES))}, a hub id, a local Hugging Face "
        "model folder or an s3prl DistilHuBERT .ckpt"
    )


def recorded_source(recorded: str, folder: str | os.PathLike[str]) -> str:
    """The encoder source a trained model ``folder``'s training record (its ``model.json``)
    names, if loading it cannot read a file outside the folder; else :class:`EdgeserError`.

    A model folder may come from someone else, and an s3prl checkpoint is a pickle: what
    the folder names is loaded only when it is ``random`` (``random:ARCH``), a hub id or
    alias (downloads go through transformers' own loading, which reads weights only), or
    a path that resolves, symlinks followed, inside the folder (relative paths are taken
    from the folder). Anything else must be named by the user (``--encoder``).
    """
    base = Path(folder).resolve()
    text = str(recorded or "").strip()

    def refuse(why: str) -> EdgeserError:
        return EdgeserError(
            f"{folder}/model.json names the encoder {text!r}, {why}; edgeser loads files "
            f"outside a model folder only when you name them: pass --encoder SOURCE (that "
            f"path, if you trust it, or your own copy of the same encoder)"
        )

    if not text:
        raise refuse("which is empty")
    if text.lower() == "random" or text.lower().startswith("random:"):
        return text
    path = Path(text).expanduser()
    candidate = path if path.is_absolute() else base / path
    if candidate.exists():
        real = candidate.resolve()
        if not real.is_relative_to(base):
            raise refuse("a path outside the folder")
        return str(real)
    if path.is_absolute() or path.suffix in _CHECKPOINT_SUFFIXES:
        raise refuse("a file that is not inside the folder")
    if text.lower() in ALIASES or _HUB_ID.match(text):
        if path.exists():  # load_encoder would take the local path over the hub id
            raise refuse(f"which is also a path here ({path.resolve()})")
        return text
    raise refuse("which is neither a hub id nor a file inside the folder")


def random_encoder(
    config: Any | None = None,
    *,
    seed: int = 0,
    precision: str = "fp32",
    source: str = "random",
    do_normalize: bool = False,
) -> Encoder:
    """A randomly initialised encoder (default: exact DistilHuBERT architecture).

    Seeded and reproducible; the global torch RNG is left untouched. For tests and dry
    runs: its features carry no information about emotion.
    """
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config if config is not None else distilhubert_config())
    logger.warning(
        "RANDOM ENCODER WEIGHTS (seed %d): this encoder was NOT pretrained; its features are "
        "meaningless for emotion recognition. Use it only for tests and dry runs; pass a hub "
        "id, a model folder or an s3prl .ckpt for real results.",
        seed,
    )
    return Encoder(
        model, source=source, is_random=True, precision=precision, do_normalize=do_normalize
    )


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

_CHECKPOINT_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".pkl"})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_offline() -> bool:
    if _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a transformers dependency
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


#: Seconds to wait for the hub's TCP handshake before calling the machine offline.
_HUB_PROBE_SECONDS = 3.0


def _hub_reachable(timeout: float = _HUB_PROBE_SECONDS) -> tuple[bool, str]:
    """Whether the Hugging Face hub's host accepts a TCP connection within ``timeout``
    (one quick check, instead of the hub client's retries with back-off), and the host."""
    import socket
    from urllib.parse import urlsplit

    try:
        from huggingface_hub import constants

        endpoint = str(getattr(constants, "ENDPOINT", "https://huggingface.co"))
    except ImportError:  # pragma: no cover - a transformers dependency
        endpoint = "https://huggingface.co"
    parts = urlsplit(endpoint)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, host
    except OSError:
        return False, host


def _fetch_error(source: str, why: str) -> EdgeserError:
    return EdgeserError(
        f"could not fetch {source!r} from the Hugging Face hub ({why}). Pass a local model "
        f"folder instead (download it where there is internet, e.g. `hf download {source} "
        "--local-dir DIR`, then --encoder DIR), the original s3prl DistilHuBERT .ckpt, or "
        "--encoder random for a dry run"
    )


def _load_pretrained(
    source: str, *, local: bool, cache_dir: str | os.PathLike[str] | None
) -> tuple[PreTrainedModel, bool]:
    """Load a HF model folder or hub id with AutoConfig/AutoModel; return (model, do_normalize).

    A hub id is looked up in the local cache first; only a miss goes to the network, after
    one quick check that the hub is reachable (offline, the error comes within seconds).
    """
    from transformers import AutoConfig, AutoModel

    options: dict[str, Any] = {"local_files_only": True}
    if cache_dir is not None and not local:
        options["cache_dir"] = str(cache_dir)
    if local and not (Path(source) / "config.json").is_file():
        raise EdgeserError(f"{source}: not a Hugging Face model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError, KeyError) as exc:
        if local:
            raise EdgeserError(f"{source}: unreadable model config: {first_line(exc)}") from exc
        if _hub_offline():
            raise _fetch_error(
                source, "HF_HUB_OFFLINE is set and it is not in the local cache"
            ) from exc
        reachable, host = _hub_reachable()
        if not reachable:
            raise _fetch_error(
                source, f"{host} is unreachable: offline? It is not in the local cache either"
            ) from exc
        options["local_files_only"] = False
        try:
            config = AutoConfig.from_pretrained(source, **options)
        except (OSError, ValueError, KeyError) as exc2:
            raise _fetch_error(
                source, f"not a model id, or the download failed: {first_line(exc2)}"
            ) from exc2
    config.layerdrop = 0.0
    try:
        model, info = AutoModel.from_pretrained(
            source, config=config, dtype=torch.float32, output_loading_info=True, **options
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        where = source if local else f"hub model {source!r}"
        raise EdgeserError(
            f"{where}: weights do not load into {type(config).__name__}: {first_line(exc)}"
        ) from exc
    check_family(model)
    missing = sorted(set(info.get("missing_keys", ())) - OPTIONAL_KEYS)
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise EdgeserError(
            f"{source}: weights do not match the architecture in its config.json "
            + describe_keys(missing=missing, mismatched=mismatched)
        )
    if "masked_spec_embed" in set(info.get("missing_keys", ())):
        zero_optional(model)
    unexpected = sorted(info.get("unexpected_keys", ()))
    if unexpected:
        logger.info(
            "%s: ignoring %d unused weights (e.g. %s)", source, len(unexpected), unexpected[0]
        )
    model.eval()
    logger.info("loaded %s (%s) from %s", type(model).__name__, config.model_type, source)
    return model, _read_do_normalize(source, options)


def _read_do_normalize(source: str, options: dict[str, Any]) -> bool:
    """``do_normalize`` of the model's feature extractor; False when it has no such file."""
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(source, **options)
    except (OSError, ValueError, KeyError):
        logger.info("%s: no feature-extractor config; assuming do_normalize=False", source)
        return False
    return bool(getattr(extractor, "do_normalize", False))
