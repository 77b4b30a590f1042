"""Checkpoints as safetensors + JSON; resumable training state without pickles.

A finished model is ``model.safetensors`` (weights) + ``model.json`` (config,
labels, encoder identity, metrics). While training, ``state.safetensors`` +
``state.json`` hold the model, the optimizer's moment estimates, torch's RNG
state and the epoch history after every epoch, written atomically, so an
interrupted run resumes from its last finished epoch; ``best.safetensors`` holds the
weights of the best epoch so far (:func:`save_best`, :func:`load_best`). Nothing is
unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edgeser.core.errors import EdgeserError
from edgeser.core.io import atomic_path, write_json

#: The best epoch's weights while training (beside ``state.safetensors``).
BEST = "best.safetensors"


def save_weights(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write ``tensors`` to ``path`` (safetensors) and ``meta`` to the ``.json`` beside it."""
    p = Path(path)
    with atomic_path(p) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    write_json(p.with_suffix(".json"), meta)


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a ``.safetensors`` file and its ``.json`` sidecar."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise EdgeserError(f"no checkpoint at {p}")
    try:
        tensors = load_file(str(p))
        meta = json.loads(p.with_suffix(".json").read_text(encoding="utf-8"))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise EdgeserError(f"{p}: not a readable edgeser checkpoint ({e})") from None
    return tensors, meta


def save_best(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Write the best epoch's weights to ``folder/best.safetensors`` atomically."""
    with atomic_path(folder / BEST) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))


def load_best(folder: Path) -> dict[str, torch.Tensor] | None:
    """The weights :func:`save_best` wrote, or ``None`` when there are none."""
    p = folder / BEST
    return load_file(str(p)) if p.is_file() else None


def save_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
) -> None:
    """Save the resumable training state (model, optimizer moments, RNG, history)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for name, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{idx}.{name}"] = t
    tensors["rng.torch"] = torch.get_rng_state()
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
        for g in opt["param_groups"]
    ]
    save_weights(folder / "state.safetensors", tensors, {**info, "param_groups": groups})


def read_json(path: Path) -> Any:
    """A JSON file's content (a sidecar, cheap: no tensors read), or ``None`` when it is
    missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_state_info(folder: Path) -> dict[str, Any] | None:
    """The JSON part of a saved training state (cheap: no tensors read), or ``None``."""
    return read_json(folder / "state.json")


def load_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore a state saved by :func:`save_state`; ``None`` if there is none (or it is corrupt)."""
    p = folder / "state.safetensors"
    if not p.is_file():
        return None
    try:
        tensors, info = load_weights(p)
    except EdgeserError:
        return None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    return info
