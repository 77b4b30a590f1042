"""Shared fixtures: RNG state restored after each test, the real RAVDESS sample."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

#: The real-speech sample: ``$EDGESER_RAVDESS_MINI``, else ``../shared/corpora/ravdess-mini``
#: beside the checkout.
RAVDESS_MINI = Path(
    os.environ.get("EDGESER_RAVDESS_MINI")
    or Path(__file__).resolve().parents[2] / "shared" / "corpora" / "ravdess-mini"
)
#: Ten more real actors (03-12) for development: ``$EDGESER_RAVDESS_DEV``, else
#: ``../shared/corpora/ravdess-dev`` beside the checkout.
RAVDESS_DEV = Path(
    os.environ.get("EDGESER_RAVDESS_DEV")
    or Path(__file__).resolve().parents[2] / "shared" / "corpora" / "ravdess-dev"
)


@pytest.fixture(autouse=True)
def _restore_rng_state():
    """Tests may seed global RNGs; put them back so test order never matters."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        import torch

        torch_state = torch.random.get_rng_state()
    except ImportError:  # pragma: no cover - torch is part of the dev install
        torch_state = None
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    if torch_state is not None:
        torch.random.set_rng_state(torch_state)


@pytest.fixture(scope="session")
def ravdess_mini() -> Path:
    """Two real RAVDESS actors (original 48 kHz files), when the checkout has them."""
    if not RAVDESS_MINI.is_dir():
        pytest.skip(
            f"real RAVDESS sample not found at {RAVDESS_MINI} (set EDGESER_RAVDESS_MINI "
            "to a folder of RAVDESS Actor_XX folders)"
        )
    return RAVDESS_MINI


@pytest.fixture(scope="session")
def ravdess_dev(ravdess_mini) -> tuple[Path, Path]:
    """Twelve real RAVDESS actors: ravdess-mini's two (01-02) and ravdess-dev's ten
    (03-12), as the two folders to prepare and concatenate, when the checkout has both."""
    if not RAVDESS_DEV.is_dir():
        pytest.skip(
            f"real RAVDESS development actors not found at {RAVDESS_DEV} (set "
            "EDGESER_RAVDESS_DEV to a folder of RAVDESS Actor_XX folders)"
        )
    return ravdess_mini, RAVDESS_DEV
