"""Writing a synthetic corpus's WAV files: one job a file, in a process pool when it pays.

A job is picklable and self-contained (settings, channel and the key of its random
stream), so the output is byte-identical whatever the order or the number of processes.
Files are written atomically, and a file that already exists with the right length is
skipped: an interrupted generation resumes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeser.core.io import atomic_path
from edgeser.core.progress import progress_bar

from .planning import VoiceSettings
from .voice import Channel, prepare, synthesize_planned

__all__ = ["WavJob", "run_job", "run_jobs"]

log = logging.getLogger(__name__)


@functools.cache
def _wav_header_bytes() -> int:
    """Header size of the mono 16-bit WAV files this libsndfile writes (44 bytes)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1, np.float32), 16000, subtype="PCM_16", format="WAV")
    return len(buf.getvalue()) - 2


def _wav_nbytes(n_frames: int) -> int:
    """Size of a complete mono 16-bit WAV file of ``n_frames`` frames."""
    return _wav_header_bytes() + 2 * n_frames


@dataclass(frozen=True)
class WavJob:
    """One WAV file to render (picklable, self-contained)."""

    path: Path
    sr: int
    settings: VoiceSettings | None  # None: a WAV header with no audio
    channel: Channel
    key: tuple[int, ...]
    text: str | None = None
    n_samples: int | None = None
    lead_s: float = 0.3
    trail_s: float = 0.3


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")


def run_job(job: WavJob) -> tuple[bool, int]:
    """Render and write one file; returns (written, n_frames). Skips a complete file."""
    path = job.path
    if job.settings is None:
        if path.is_file() and path.stat().st_size == _wav_nbytes(0):
            return False, 0
        _write_wav(path, np.zeros(0, np.float32), job.sr)
        return True, 0
    rng = np.random.default_rng(list(job.key))
    plan, lead, n = prepare(
        job.settings, job.sr, rng, text=job.text, n_samples=job.n_samples,
        lead_s=job.lead_s, trail_s=job.trail_s,
    )  # fmt: skip
    if path.is_file() and path.stat().st_size == _wav_nbytes(n):
        return False, n
    audio = synthesize_planned(plan, lead, n, job.settings, job.sr, rng, job.channel)
    _write_wav(path, audio, job.sr)
    return True, n


def _n_workers(workers: int | None, n_jobs: int) -> int:
    """Processes to use: ``workers`` (default: the CPUs, at most 8), fewer for few jobs."""
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    return max(1, min(int(workers), n_jobs // 16 or 1))


def run_jobs(jobs: Sequence[WavJob], *, workers: int | None, progress: bool, desc: str) -> None:
    """Render ``jobs`` (in a process pool when worthwhile), with progress and a summary log."""
    t0 = time.perf_counter()
    n_workers = _n_workers(workers, len(jobs))
    written = seconds = 0.0
    with contextlib.ExitStack() as stack:
        if n_workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=n_workers))
            chunk = max(1, min(32, len(jobs) // (n_workers * 8)))
            results: Iterable[tuple[bool, int]] = pool.map(run_job, jobs, chunksize=chunk)
        else:
            results = map(run_job, jobs)
        bar = stack.enter_context(progress_bar(len(jobs), desc, progress, unit="file"))
        for job, (done, n) in zip(jobs, results, strict=True):
            written += done
            seconds += n / job.sr
            bar.update(1)
    log.info(
        "%s: %d files, %.1f min of audio (%d written, %d already complete) in %.1f s, "
        "%d process(es)",
        desc, len(jobs), seconds / 60, written, len(jobs) - written, time.perf_counter() - t0,
        n_workers,
    )  # fmt: skip
