"""Progress of long work: a tqdm bar when stderr is a terminal, else log lines.

A run whose stderr is a file or a pipe (in the background, under CI) gets an INFO line on
the ``edgeser.progress`` logger at most every :func:`log_interval` seconds (default 10;
``EDGESER_PROGRESS_SECONDS`` changes it, 0 logs every update) with what is done, the rate
and an ETA, and one when the work ends. Training logs one line per epoch on the same
schedule (:class:`EpochLog`: fold, epoch, validation UA, ETA); ``-q`` silences both.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("edgeser.progress")

_DEFAULT_SECONDS = 10.0


def is_terminal() -> bool:
    """Whether stderr is an interactive terminal (a bar redraws there; elsewhere: lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


def log_interval() -> float:
    """Seconds between progress lines (``EDGESER_PROGRESS_SECONDS``, default 10)."""
    text = os.environ.get("EDGESER_PROGRESS_SECONDS", "").strip()
    try:
        value = float(text) if text else _DEFAULT_SECONDS
    except ValueError:
        return _DEFAULT_SECONDS
    return value if math.isfinite(value) and value >= 0 else _DEFAULT_SECONDS


def format_seconds(seconds: float) -> str:
    """``"1h02m"``, ``"4m05s"`` or ``"12s"``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class _Null:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str) -> None:
        return None


class _LogLines:
    """The bar's counterpart for logs: a line every :func:`log_interval` seconds."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.postfix = 0, ""
        self.start = self.last = time.monotonic()
        self.every = log_interval()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self._line(now)

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        log.info(
            "%s: %d/%d %s (%d %%), %.2f %s/s, elapsed %s, ETA %s%s",
            self.desc,
            self.done,
            self.total,
            self.unit,
            100 * self.done // max(self.total, 1),
            rate,
            self.unit,
            format_seconds(elapsed),
            format_seconds(eta) if math.isfinite(eta) else "?",
            f" ({self.postfix})" if self.postfix else "",
        )

    def close(self) -> None:
        if self.done:
            log.info(
                "%s: %d/%d %s done in %s",
                self.desc,
                self.done,
                self.total,
                self.unit,
                format_seconds(time.monotonic() - self.start),
            )


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "utt") -> Iterator[Any]:
    """A tqdm bar on a terminal, log lines elsewhere (when ``enabled`` and there is work),
    else an object that ignores updates."""
    if not enabled or total <= 0:
        yield _Null()
        return
    if not is_terminal():
        lines = _LogLines(total, desc, unit)
        try:
            yield lines
        finally:
            lines.close()
        return
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0,
        leave=False,
    )
    try:
        yield bar
    finally:
        bar.close()


class EpochLog:
    """One log line per finished epoch (at most every :func:`log_interval` seconds, and
    always for the last): ``fold1: epoch 12/60, val UA 0.543 (best 0.561 at 9),
    6.1 s/epoch, ETA at most 4m52s``. With early stopping the ETA is an upper bound."""

    def __init__(
        self, name: str, epochs: int, start: int, enabled: bool, early_stopping: bool = False
    ) -> None:
        self.name, self.epochs, self.start = name, epochs, start
        self.enabled = enabled and not is_terminal()
        self.bound = "at most " if early_stopping else ""
        self.t0 = self.last = time.monotonic()
        self.every = log_interval()

    def epoch(
        self,
        epoch: int,
        record: dict[str, Any],
        best_epoch: int,
        best_ua: float,
        final: bool = False,
    ) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and (now - self.last < self.every or epoch + 1 >= self.epochs):
            return  # (the last epoch's line is the final one)
        self.last = now
        per_epoch = (now - self.t0) / max(epoch + 1 - self.start, 1)
        remaining = 0 if final else self.epochs - epoch - 1
        val = ""
        if "val_ua" in record:
            val = f", val UA {record['val_ua']:.3f} (best {best_ua:.3f} at {best_epoch + 1})"
        log.info(
            "%s: epoch %d/%d%s, train loss %.4f, %.1f s/epoch, %s",
            self.name,
            epoch + 1,
            self.epochs,
            val,
            record.get("train_loss", math.nan),
            per_epoch,
            "done" if final else f"ETA {self.bound}{format_seconds(per_epoch * remaining)}",
        )
