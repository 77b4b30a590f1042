"""Feature extraction on a Ray cluster (``--executor ray[:ADDRESS]``).

:func:`~edgeser.features.extract.extract` cuts the cache's missing entries into the same
length-sorted batches on every executor; here a pool of Ray actors encodes them.

* **One encoder per actor, the driver's.** The driver's encoder goes to the cluster once
  (its config and weights through Ray's object store, so no node needs the hub cache or
  the model files); each actor rebuilds it with the driver's *resolved* precision (never
  ``auto``, which each process would resolve for its own CPU) and refuses to run unless
  its identity (weights, config, precision, implementation) equals the driver's.
* **Same arithmetic.** An actor runs :class:`~edgeser.features.extract.BatchEncoder`,
  the code a local run uses, with the driver's torch thread count by default (the
  number of threads changes float32 rounding; ``--worker-threads`` trades that
  identity for more, smaller actors). Each actor reserves as many CPUs as it runs
  threads.
* **Workers may not share a file system.** The driver reads each file's bytes and
  ships them with the batch; actors decode them (the same decoder as a local read). Only
  the driver writes the feature cache, one atomic entry per item as its batch comes back.
* **Faults.** Actors restart after a crash and a batch in flight is retried
  (``max_restarts``, ``max_task_retries``); an entry is written only from a finished
  batch, so a crash costs a retry, never a lost or corrupt entry. Actors are killed
  when extraction ends or is interrupted.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeser.core.errors import AudioError, EdgeserError
from edgeser.core.executor import ExecutorSpec, connect_ray
from edgeser.features.cache import Item
from edgeser.models.registry import FeatureEncoder

#: :class:`edgeser.features.extract.BatchEncoder` (not imported: extract imports this module)
BatchEncoder = Any

log = logging.getLogger(__name__)

__all__ = ["MAX_RETRIES", "encoder_payload", "ray_batches", "rebuild_encoder"]

#: Restarts of a crashed actor, and retries of a batch whose actor died.
MAX_RETRIES = 3
#: Batches queued per actor (one running, one waiting), so no actor waits for the driver.
_IN_FLIGHT_PER_ACTOR = 2


def encoder_payload(encoder: FeatureEncoder) -> dict[str, Any]:
    """What an actor needs to rebuild ``encoder`` exactly (picklable).

    An SSL :class:`~edgeser.models.ssl.Encoder` travels as its config and weights (its
    modules hold parametrisations that pickle refuses); any other encoder (the MFCC
    front end) as itself.
    """
    from edgeser.models.ssl import Encoder

    if isinstance(encoder, Encoder):
        return {
            "ssl": {
                "config": encoder.model.config,
                "state": {
                    k: v.detach().cpu().numpy() for k, v in encoder.model.state_dict().items()
                },
                "source": encoder.source,
                "is_random": encoder.is_random,
                "precision": encoder.precision,
                "do_normalize": encoder.do_normalize,
                "batch_size": encoder.batch_size,
            },
            "identity": encoder.identity,
        }
    return {"object": encoder, "identity": encoder.identity}


def rebuild_encoder(payload: dict[str, Any]) -> FeatureEncoder:
    """The encoder of :func:`encoder_payload`; :class:`EdgeserError` if its identity
    differs from the driver's (another library version computing other features)."""
    if "ssl" in payload:
        import torch
        from transformers import AutoModel

        from edgeser.models.ssl import Encoder

        p = dict(payload["ssl"])
        with torch.random.fork_rng(devices=[]):
            model = AutoModel.from_config(p.pop("config"))
        model.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in p.pop("state").items()}, strict=True
        )
        encoder: FeatureEncoder = Encoder(model, **p)
    else:
        encoder = payload["object"]
    if encoder.identity != payload["identity"]:
        raise EdgeserError(
            f"a Ray worker rebuilt encoder {encoder.identity}, not the driver's "
            f"{payload['identity']}: install the same edgeser, torch and "
            "transformers on every node"
        )
    return encoder


class EncodeActor:
    """A Ray actor holding one encoder; :meth:`run` encodes one batch."""

    def __init__(self, payload: dict[str, Any], job: BatchEncoder, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        # a restarted actor rebuilds from the same object (the driver holds the
        # reference for as long as the pool lives)
        self.encoder = rebuild_encoder(payload)
        self.job = job

    def run(
        self, index: int, batch: list[Item], reuse: list[bool], audio: dict[str, bytes]
    ) -> tuple[int, list[np.ndarray | None], str, int]:
        """``(index, arrays, node id, pid)`` of one batch."""
        import ray

        loaded = self.job.load(batch, audio)
        arrays = self.job.encode(self.encoder, batch, loaded, reuse)
        return index, arrays, ray.get_runtime_context().get_node_id(), os.getpid()


def _read_audio(batch: Sequence[Item]) -> dict[str, bytes]:
    """Each file of ``batch`` as bytes (read once however many views it has)."""
    out: dict[str, bytes] = {}
    for it in batch:
        if it.path not in out:
            p = Path(it.path)
            if not p.is_file():
                raise AudioError(f"{p}: no such audio file")
            out[it.path] = p.read_bytes()
    return out


def _pool_shape(ray: Any, spec: ExecutorSpec, n_batches: int) -> tuple[int, int]:
    """``(actors, threads per actor)``: threads default to this process's torch threads,
    capped by the largest node; actors to as many as the cluster's CPUs hold."""
    import torch

    threads = spec.worker_threads or torch.get_num_threads()
    node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    largest = max(node_cpus, default=0)
    if largest < 1:
        raise EdgeserError(f"--executor {spec}: the Ray cluster has no CPUs")
    if threads > largest:
        log.warning(
            "ray: %d threads per actor do not fit a %d-CPU node; using %d (features "
            "may differ from a local run's in the last bits)",
            threads,
            largest,
            largest,
        )
        threads = largest
    fit = sum(c // threads for c in node_cpus)
    actors = spec.workers or max(1, fit)
    return max(1, min(actors, n_batches)), threads


def ray_batches(
    encoder: FeatureEncoder,
    job: BatchEncoder,
    batches: Sequence[list[Item]],
    reuse: Sequence[list[bool]],
    spec: ExecutorSpec,
    on_batch: Callable[[int, str, int], None] | None = None,
) -> Iterator[tuple[int, list[np.ndarray | None]]]:
    """``(batch index, arrays)`` as batches finish on a pool of Ray actors (any order).

    ``on_batch(index, node id, pid)`` is told where each batch ran (benchmarks).
    """
    ray = connect_ray(spec)
    from ray.exceptions import RayActorError, RayTaskError

    n_actors, threads = _pool_shape(ray, spec, len(batches))
    t0 = time.perf_counter()
    payload = ray.put(encoder_payload(encoder))
    remote = ray.remote(EncodeActor).options(
        num_cpus=threads,
        max_restarts=MAX_RETRIES,
        max_task_retries=MAX_RETRIES,
        scheduling_strategy="SPREAD",
    )
    actors = [remote.remote(payload, job, threads) for _ in range(n_actors)]
    log.info("ray: %d actors x %d threads encoding %d batches", n_actors, threads, len(batches))
    nodes: Counter[str] = Counter()
    pending: dict[Any, Any] = {}
    queue = iter(range(len(batches)))

    def submit(actor: Any) -> None:
        i = next(queue, None)
        if i is not None:
            ref = actor.run.remote(i, batches[i], reuse[i], _read_audio(batches[i]))
            pending[ref] = actor

    try:
        for _ in range(_IN_FLIGHT_PER_ACTOR):
            for actor in actors:
                submit(actor)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(done[0])
            try:
                index, arrays, node, pid = ray.get(done[0])
            except RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, EdgeserError):
                    raise type(cause)(str(cause)) from None
                raise
            except RayActorError as e:
                raise EdgeserError(
                    f"ray: an encoding actor died {MAX_RETRIES + 1} times "
                    f"({str(e).strip().splitlines()[0][:200]})"
                ) from None
            submit(actor)
            nodes[node] += 1
            if on_batch is not None:
                on_batch(index, node, pid)
            yield index, arrays
    finally:
        for actor in actors:
            ray.kill(actor)
    log.info(
        "ray: %d batches in %.1f s on %d node(s): %s",
        len(batches),
        time.perf_counter() - t0,
        len(nodes),
        ", ".join(f"{n[:8]} {c}" for n, c in nodes.most_common()),
    )
