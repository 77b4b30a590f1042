"""Batch inference over an archive: ``edgeser predict MODEL.onnx --manifest M.csv --out
preds.parquet [--executor ray[:ADDRESS]]``.

**Input**: a CSV with a ``path`` column (relative paths are taken from the manifest's
folder) and optionally ``utt_id`` (default: the path) and ``label`` (a reference label,
copied through); an edgeser ``manifest.csv`` is one. Ids must be unique.

**Output**: ``preds.parquet`` is a Parquet dataset, a folder of parts
``part-00000.parquet`` ... (``pandas.read_parquet("preds.parquet")`` reads them as one
table), one row per utterance: ``utt_id``, ``path``, ``label`` (the manifest's, empty if
none), ``predicted``, ``p_<class>`` (float32, in ``model.json``'s label order), for a
dimensional model ``pred_<dimension>``, ``status`` and ``segments`` (as ``edgeser predict``
says them: a file longer than the model's window is classified by speech segments, read
in blocks), ``duration`` (seconds of the file), ``model`` (the ONNX file's name and the
start of its sha256) and ``error`` (null, or why the file could not be scored: an
unreadable file is one such row and the run goes on). Rows come in manifest order.

**Where**: the driver (this process) reads and checks the manifest and writes the parts;
locally a pool of processes (``concurrent.futures``) scores chunks of rows; with
``--executor ray`` Ray Data decodes and trims in parallel tasks and runs
:class:`~edgeser.runtime.model.OnnxEmotionModel` in a pool of actors (``map_batches``),
whose output streams back to the driver (audio paths must be readable on every node, e.g.
a shared mount; the output is written by the driver only). Each utterance runs through the
graph alone (no padding), so its output does not depend on what it was batched with: the
two executors write the same rows.

**Resumable and interruptible**: every part is written atomically (a temporary file, then a
link under a name no other part has: a part is never overwritten) once it holds
``part_rows`` rows or ``part_seconds`` have passed; a re-run reads the ids already written
and scores only the others, so an interrupted run (Ctrl-C, a lost node) leaves a readable
dataset and a re-run adds no duplicate. Rows that failed (an ``error``) are scored again by
the next run (the file may have appeared since), and the parts are then rewritten so that
every id keeps one row: its scored one, or its latest error. One run at a time writes into
an ``--out`` (a lock file, ``.lock``, inside it: a second run is refused with one line).
A worker process or actor that dies is replaced and its rows are retried (Ray Data
restarts its actors and retries their tasks without limit; a local pool is replaced up to
three times).

Needs pyarrow (and Ray for ``--executor ray``): ``pip install 'edgeser[distributed]'``. Both
are imported here only when a manifest is scored, so ``predict FILES`` stays on the light
runtime install.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import logging
import multiprocessing
import os
import re
import secrets
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeser.audio.io import audio_info
from edgeser.core.errors import EdgeserError
from edgeser.core.executor import RAY_EXTRA, ExecutorSpec, connect_ray, current_executor
from edgeser.runtime.model import OnnxEmotionModel, TrimSettings, read_prepared

log = logging.getLogger(__name__)

__all__ = ["PART_ROWS", "PART_SECONDS", "ArchiveJob", "predict_manifest", "read_predictions"]

#: A part is written once it holds this many rows ...
PART_ROWS = 1000
#: ... or this many seconds after the previous one (what Ctrl-C can cost at most).
PART_SECONDS = 30.0
#: Rows a local process or a Ray task/actor handles at a time.
CHUNK_ROWS = 16
#: Times a local pool whose process died is replaced before the run gives up.
_MAX_POOL_RESTARTS = 3
_PART = re.compile(r"^part-(\d{5,})\.parquet$")
_LOCK = ".lock"


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError:
        raise EdgeserError(f"--out *.parquet needs pyarrow: {RAY_EXTRA}") from None
    return pa


@dataclass(frozen=True)
class ArchiveJob:
    """What scoring a row needs (picklable: local processes and Ray workers get a copy,
    the model's bytes and card included, so no worker needs the model's file)."""

    model_name: str
    onnx: bytes
    card: dict[str, Any]
    labels: tuple[str, ...]
    dimensions: tuple[str, ...]
    trim: TrimSettings | None
    model_id: str
    threads: int
    window: float

    @classmethod
    def for_model(cls, model: str | os.PathLike[str], threads: int) -> ArchiveJob:
        m = OnnxEmotionModel(model, threads=1)  # checks the graph and card once, here
        data = m.path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:12]
        return cls(
            m.path.name,
            data,
            m.card,
            tuple(m.labels),
            tuple(m.dimension_names),
            m.trim,
            f"{m.path.name}@{digest}",
            threads,
            m.long.window,
        )

    def columns(self) -> list[str]:
        return [
            "utt_id",
            "path",
            "label",
            "predicted",
            *[f"p_{c}" for c in self.labels],
            *[f"pred_{d}" for d in self.dimensions],
            "status",
            "segments",
            "duration",
            "model",
            "error",
        ]

    def schema(self) -> Any:
        pa = _pyarrow()
        f32 = [pa.field(c, pa.float32()) for c in self.columns() if c.startswith(("p_", "pred_"))]
        return pa.schema(
            [
                pa.field("utt_id", pa.string()),
                pa.field("path", pa.string()),
                pa.field("label", pa.string()),
                pa.field("predicted", pa.string()),
                *f32,
                pa.field("status", pa.string()),
                pa.field("segments", pa.int32()),
                pa.field("duration", pa.float64()),
                pa.field("model", pa.string()),
                pa.field("error", pa.string()),
            ]
        )

    def decode(self, path: str) -> tuple[np.ndarray, float | None, str | None]:
        """``(prepared waveform, duration, error)`` of one file. An error comes with an
        empty wave; so does a file longer than the model's window, without an error: it is
        read in blocks where it is scored (:meth:`score`), never whole."""
        try:
            info = audio_info(path) if Path(path).is_file() else None
            if info is not None and info.duration > self.window:
                return np.zeros(0, np.float32), info.duration, None
            wave, duration = read_prepared(path, self.trim)
        except EdgeserError as e:
            return np.zeros(0, np.float32), None, str(e)
        return wave, duration, None

    def score(self, model: OnnxEmotionModel, rows: Sequence[dict[str, Any]]) -> dict[str, list]:
        """Output columns of decoded ``rows`` (``utt_id``, ``path``, ``label``, ``wave``,
        ``duration``, ``error``), each utterance run alone through the graph."""
        out: dict[str, list] = {c: [] for c in self.columns()}
        for row in rows:
            error, result = row["error"], None
            if error is None:
                try:
                    wave = row["wave"]
                    result = (
                        model.analyse_prepared(wave)
                        if len(wave)
                        else model.analyse_file(row["path"])
                    )  # longer than the window
                except EdgeserError as e:
                    error = str(e)
                except Exception as e:  # onnxruntime's own exception types
                    error = f"{row['path']}: inference failed ({str(e).strip()[:200]})"
            out["utt_id"].append(row["utt_id"])
            out["path"].append(row["path"])
            out["label"].append(row["label"])
            out["predicted"].append(None if result is None else result.label)
            for c in self.labels:
                out[f"p_{c}"].append(None if result is None else result.probabilities[c])
            for d in self.dimensions:
                out[f"pred_{d}"].append(
                    None if result is None or result.dimensions is None else result.dimensions[d]
                )
            out["status"].append(None if result is None else result.status)
            out["segments"].append(None if result is None else result.segments)
            out["duration"].append(row["duration"])
            out["model"].append(self.model_id)
            out["error"].append(error)
        return out

    def model(self) -> OnnxEmotionModel:
        """The model, loaded from this job's copy (in memory: no file is written)."""
        return OnnxEmotionModel.from_bytes(
            self.onnx, self.card, name=self.model_name, threads=self.threads
        )


# --------------------------------------------------------------------------- manifest
def read_archive_manifest(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """``[{"utt_id", "path", "label"}]`` of a manifest CSV (checked: a ``path`` column,
    unique ids)."""
    p = Path(path)
    if not p.is_file():
        raise EdgeserError(f"--manifest {p}: no such file")
    base = p.resolve().parent
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first name
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            names = [(n or "").strip() for n in reader.fieldnames or []]
            reader.fieldnames = names
            if "path" not in names:
                raise EdgeserError(
                    f"--manifest {p}: no 'path' column (columns: "
                    f"{', '.join(map(repr, names)) or 'none'})"
                )
            rows = []
            for r in reader:
                audio = (r.get("path") or "").strip()
                if not audio:
                    raise EdgeserError(f"--manifest {p}: line {reader.line_num} has no path")
                full = audio if os.path.isabs(audio) else str(base / audio)
                rows.append(
                    {
                        "utt_id": (r.get("utt_id") or "").strip() or audio,
                        "path": full,
                        "label": (r.get("label") or "").strip(),
                    }
                )
    except (UnicodeDecodeError, csv.Error) as e:
        raise EdgeserError(f"--manifest {p}: not a readable CSV ({e})") from None
    seen: set[str] = set()
    dup = [r["utt_id"] for r in rows if r["utt_id"] in seen or seen.add(r["utt_id"])]
    if dup:
        raise EdgeserError(f"--manifest {p}: {len(dup)} duplicate ids (first: {dup[0]})")
    return rows


# --------------------------------------------------------------------------- output
def _parts(out: Path) -> list[Path]:
    return sorted(f for f in out.iterdir() if _PART.match(f.name)) if out.is_dir() else []


def read_predictions(out: str | os.PathLike[str]) -> Any:
    """All parts of a ``preds.parquet`` folder as one pyarrow table (written order)."""
    pa = _pyarrow()
    parts = _parts(Path(out))
    if not parts:
        return None
    return pa.concat_tables([pa.parquet.read_table(f) for f in parts])


def _lock(out: Path) -> Any:
    """Hold ``out``'s lock file for this run (released when the returned file closes)."""
    fh = open(out / _LOCK, "a+b")  # noqa: SIM115 - held open for the whole run
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - no fcntl (Windows): no lock
        pass
    except OSError:
        fh.close()
        raise EdgeserError(
            f"--out {out} is being written by another edgeser predict (it "
            f"holds {out / _LOCK}); wait for it or use another --out"
        ) from None
    return fh


class PartWriter:
    """Appends rows to a ``preds.parquet`` folder, one atomically written part at a time
    (holding the folder's lock until :meth:`close`)."""

    def __init__(self, out: Path, job: ArchiveJob, part_rows: int, part_seconds: float) -> None:
        self.pa = _pyarrow()
        if out.exists() and not out.is_dir():
            raise EdgeserError(f"--out {out}: exists and is not a folder of Parquet parts")
        out.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(out)
        for stale in out.glob(".part-*.tmp"):  # left by a killed run: never a part
            stale.unlink(missing_ok=True)
        self.out, self.job = out, job
        self.schema = job.schema()
        self.part_rows, self.part_seconds = part_rows, part_seconds
        parts = _parts(out)
        self.next = 1 + max((int(_PART.match(f.name).group(1)) for f in parts), default=-1)
        #: ids with a scored row (not re-run) and ids whose only rows are errors (re-run)
        self.done: set[str] = set()
        self.failed: set[str] = set()
        for f in parts:
            if self.pa.parquet.read_schema(f).names != self.schema.names:
                self.close()
                raise EdgeserError(
                    f"--out {out}: {f.name} has other columns than this "
                    "edgeser writes (an older version's?); use another --out"
                )
            table = self.pa.parquet.read_table(f, columns=["utt_id", "model", "error"])
            models = set(table.column("model").to_pylist())
            if models - {job.model_id}:
                self.close()
                raise EdgeserError(
                    f"--out {out} holds predictions of another model "
                    f"({sorted(models - {job.model_id})[0]}); use another "
                    "--out or remove it"
                )
            for uid, error in zip(
                table.column("utt_id").to_pylist(), table.column("error").to_pylist(), strict=True
            ):
                (self.failed if error is not None else self.done).add(uid)
        self.failed -= self.done
        self.buffer: list[dict[str, list]] = []
        self.buffered = 0
        self.written = 0
        self.last = time.monotonic()

    def add(self, columns: dict[str, list]) -> None:
        self.buffer.append(columns)
        self.buffered += len(columns["utt_id"])
        if self.buffered >= self.part_rows or time.monotonic() - self.last >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        merged = {c: [v for cols in self.buffer for v in cols[c]] for c in self.schema.names}
        table = self.pa.Table.from_pydict(merged, schema=self.schema)
        tmp = self._temporary()
        try:
            self.pa.parquet.write_table(table, tmp)
            while True:  # a link never replaces a part, whoever wrote it
                try:
                    os.link(tmp, self.out / f"part-{self.next:05d}.parquet")
                    break
                except FileExistsError:
                    self.next += 1
        finally:
            tmp.unlink(missing_ok=True)
        self.next += 1
        self.written += self.buffered
        self.buffer, self.buffered, self.last = [], 0, time.monotonic()

    def compact(self) -> int:
        """Keep one row per id, where the id first appears (so a resumed run keeps the
        manifest's order), holding its scored row if it has one, else its latest error;
        rewrites (atomically) only the parts that change. Returns how many rows were
        dropped."""
        parts = _parts(self.out)
        slim = [self.pa.parquet.read_table(f, columns=["utt_id", "error"]) for f in parts]
        first: dict[str, tuple[int, int]] = {}
        best: dict[str, tuple[int, int]] = {}
        for i, t in enumerate(slim):
            errors = t.column("error").to_pylist()
            for j, uid in enumerate(t.column("utt_id").to_pylist()):
                first.setdefault(uid, (i, j))
                old = best.get(uid)
                if (
                    old is None
                    or errors[j] is None
                    or slim[old[0]].column("error")[old[1]].as_py() is not None
                ):
                    best[uid] = (i, j)
        # part -> its new rows, each (source part, source row); unchanged parts are skipped
        plan: dict[int, list[tuple[int, int]]] = {}
        for i, t in enumerate(slim):
            rows = [
                best[uid]
                for j, uid in enumerate(t.column("utt_id").to_pylist())
                if first[uid] == (i, j)
            ]
            if rows != [(i, j) for j in range(t.num_rows)]:
                plan[i] = rows
        sources = {src for rows in plan.values() for src, _ in rows}
        full = {src: self.pa.parquet.read_table(parts[src]) for src in sources}  # before writing
        dropped = 0
        for i, rows in plan.items():
            dropped += slim[i].num_rows - len(rows)
            if not rows:
                parts[i].unlink()
                continue
            table = self.pa.concat_tables([full[src].slice(j, 1) for src, j in rows])
            tmp = self._temporary()
            try:
                self.pa.parquet.write_table(table, tmp)
                os.replace(tmp, parts[i])
            finally:
                tmp.unlink(missing_ok=True)
        return dropped

    def _temporary(self) -> Path:
        """A fresh temporary name in the folder (removed at the start of a later run if
        this one is killed while writing it)."""
        return self.out / f".part-{os.getpid()}-{secrets.token_hex(4)}.tmp"

    def close(self) -> None:
        self._lock.close()


# --------------------------------------------------------------------------- local
_WORKER: tuple[ArchiveJob, OnnxEmotionModel] | None = None


def _init_worker(job: ArchiveJob) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _WORKER = (job, job.model())


def _score_chunk(rows: list[dict[str, str]]) -> dict[str, list]:
    assert _WORKER is not None
    job, model = _WORKER
    decoded = []
    for r in rows:
        wave, duration, error = job.decode(r["path"])
        decoded.append({**r, "wave": wave, "duration": duration, "error": error})
    return job.score(model, decoded)


def _chunks(rows: Sequence[dict[str, str]], n: int) -> Iterator[list[dict[str, str]]]:
    for i in range(0, len(rows), n):
        yield list(rows[i : i + n])


def _local_results(
    job: ArchiveJob, rows: Sequence[dict[str, str]], workers: int
) -> Iterator[dict[str, list]]:
    """Scored chunks in manifest order from a pool of ``workers`` processes (at most two
    chunks per process in flight; a dead process's chunks are re-run in a new pool)."""
    chunks = list(_chunks(rows, CHUNK_ROWS))
    ctx = multiprocessing.get_context("spawn")
    i, failures = 0, 0
    while i < len(chunks):
        pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(job,)
        )
        try:
            pending: list[cf.Future] = []
            nxt = i
            while i < len(chunks):
                while nxt < len(chunks) and len(pending) < 2 * workers:
                    pending.append(pool.submit(_score_chunk, chunks[nxt]))
                    nxt += 1
                result = pending.pop(0).result()
                i += 1
                yield result
        except cf.process.BrokenProcessPool:
            failures += 1
            if failures > _MAX_POOL_RESTARTS:
                raise EdgeserError(
                    f"predict: worker processes died {failures} times (at "
                    f"{chunks[i][0]['path']} or the rows after it)"
                ) from None
            log.warning("predict: a worker process died; retrying from row %d", i * CHUNK_ROWS)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- ray
class _RayPredictor:
    """A Ray Data actor: one model session, scoring decoded batches."""

    def __init__(self, job: ArchiveJob) -> None:
        self.job, self.model = job, job.model()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {k: batch[k][i] for k in ("utt_id", "path", "label", "wave", "duration", "error")}
            for i in range(len(batch["utt_id"]))
        ]
        for r in rows:
            r["error"] = None if r["error"] in (None, "") else str(r["error"])
            r["duration"] = None if r["error"] is not None else float(r["duration"])
        return {k: np.array(v, dtype=object) for k, v in self.job.score(self.model, rows).items()}


def _ray_decode(batch: dict[str, Any], job: ArchiveJob) -> dict[str, Any]:
    waves, durations, errors = [], [], []
    for path in batch["path"]:
        wave, duration, error = job.decode(str(path))
        waves.append(wave)
        durations.append(np.nan if duration is None else duration)
        errors.append(error or "")
    out = {k: np.asarray(batch[k], dtype=object) for k in ("utt_id", "path", "label")}
    wave_col = np.empty(len(waves), dtype=object)
    wave_col[:] = waves
    return {
        **out,
        "wave": wave_col,
        "duration": np.asarray(durations, np.float64),
        "error": np.asarray(errors, dtype=object),
    }


def _ray_results(
    job: ArchiveJob,
    rows: Sequence[dict[str, str]],
    spec: ExecutorSpec,
) -> Iterator[dict[str, list]]:
    connect_ray(spec)
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows in manifest order, as locally
    ctx.enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    # Decoding tasks reserve no CPU (they are a small part of the work, and an actor pool
    # holding every CPU would otherwise starve them); at most one per CPU runs at a time.
    actors = spec.workers or max(1, cpus // job.threads)
    ds = ray.data.from_items(list(rows), override_num_blocks=max(1, len(rows) // CHUNK_ROWS))
    ds = ds.map_batches(
        _ray_decode,
        fn_kwargs={"job": job},
        batch_size=CHUNK_ROWS,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=max(1, cpus)),
    )
    ds = ds.map_batches(
        _RayPredictor,
        fn_constructor_kwargs={"job": job},
        batch_size=CHUNK_ROWS,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=job.threads,
    )
    log.info("predict: Ray Data, %d actors x %d threads", actors, job.threads)
    columns = job.columns()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield {c: [_plain(v) for v in batch[c]] for c in columns}


def _plain(v: Any) -> Any:
    """A numpy scalar from Ray Data as the Python value the schema takes."""
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


# --------------------------------------------------------------------------- entry
@dataclass
class ArchiveSummary:
    """What :func:`predict_manifest` did."""

    total: int
    skipped: int
    written: int
    errors: int
    seconds: float
    retried: int = 0
    """Utterances whose earlier row was an error, scored again (counted in ``written``)."""


def predict_manifest(
    model: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    threads: int = 1,
    executor: ExecutorSpec | None = None,
    part_rows: int = PART_ROWS,
    part_seconds: float = PART_SECONDS,
) -> ArchiveSummary:
    """Score every utterance of ``manifest`` not yet in ``out`` (see the module docstring);
    ``threads``: onnxruntime threads of each worker."""
    t0 = time.perf_counter()
    spec = executor or current_executor()
    job = ArchiveJob.for_model(model, threads)
    rows = read_archive_manifest(manifest)
    writer = PartWriter(Path(out), job, part_rows, part_seconds)
    try:
        todo = [r for r in rows if r["utt_id"] not in writer.done]
        retried = sum(r["utt_id"] in writer.failed for r in todo)
        log.info(
            "predict: %d of %d utterances already in %s, scoring %d (%d that failed before)",
            len(rows) - len(todo),
            len(rows),
            out,
            len(todo),
            retried,
        )
        errors = 0
        if todo:
            if spec.is_ray:
                results: Iterable[dict[str, list]] = _ray_results(job, todo, spec)
            else:
                workers = spec.workers or max(1, (os.cpu_count() or 1) // threads)
                results = _local_results(job, todo, min(workers, len(todo)))
            try:
                for columns in results:
                    errors += sum(e is not None for e in columns["error"])
                    writer.add(columns)
            finally:
                writer.flush()  # what was scored before an interruption is kept
                writer.compact()  # the rows that failed before, now superseded
    finally:
        writer.close()
    return ArchiveSummary(
        len(rows), len(rows) - len(todo), writer.written, errors, time.perf_counter() - t0, retried
    )
