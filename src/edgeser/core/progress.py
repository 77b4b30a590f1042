"""Progress display for long work: a tqdm bar on stderr, or nothing."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


class _Null:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str) -> None:
        return None


@contextlib.contextmanager
def progress_bar(
    total: int, desc: str, enabled: bool = True, unit: str = "utt"
) -> Iterator[Any]:
    """A tqdm bar (when ``enabled`` and there is work), else an object that ignores updates."""
    if not enabled or total <= 0:
        yield _Null()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
               mininterval=1.0, leave=False)
    try:
        yield bar
    finally:
        bar.close()
