"""Where the embarrassingly parallel work runs: in this process (``local``) or on a Ray
cluster (``ray[:ADDRESS]``).

``--executor`` on ``train``, ``evaluate``, ``reproduce``, ``compare`` and ``demo`` chooses
where the feature cache's missing entries are encoded (:mod:`edgeser.features.distributed`);
on ``predict --manifest`` where the archive is scored (:mod:`edgeser.runtime.batch`). The
choice never changes a result: it is not part of any config, cache key or
``results.json``. Forms:

* ``local`` (default): this process (``predict --manifest``: a pool of local processes);
* ``ray``: a Ray instance started inside this process on this machine's CPUs;
* ``ray:auto``: the running cluster this machine belongs to (``ray start --head`` /
  ``ray start --address=HEAD:6379``), or ``RAY_ADDRESS``;
* ``ray:HOST:PORT`` (or ``ray:ray://HOST:10001`` for Ray Client): that cluster.

Only the standard library is imported here; Ray is imported when it is used, and a
missing install is one error line naming the extra to install. Ray's usage statistics
are off unless the environment turns them on (``RAY_USAGE_STATS_ENABLED``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from edgeser.core.errors import EdgeserError

log = logging.getLogger(__name__)

__all__ = [
    "RAY_EXTRA",
    "ExecutorSpec",
    "connect_ray",
    "current_executor",
    "import_ray",
    "parse_executor",
    "use_executor",
]

#: What to install for ``--executor ray`` and Parquet output.
RAY_EXTRA = "pip install 'edgeser[distributed]'"


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed ``--executor`` value and its pool size.

    ``address`` is ``None`` for a Ray instance started here, else what ``ray.init``
    connects to; ``workers`` is the number of Ray actors (or local processes for
    ``predict --manifest``; ``None``: as many as the CPUs allow); ``worker_threads`` the
    torch threads of each feature-encoding actor (``None``: this process's thread count,
    which is what makes Ray's features bitwise identical to a local run's).
    """

    kind: str = "local"
    address: str | None = None
    workers: int | None = None
    worker_threads: int | None = None

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def __str__(self) -> str:
        return "ray" + (f":{self.address}" if self.address else "") if self.is_ray else "local"


def parse_executor(
    text: str | None, *, workers: int | None = None, worker_threads: int | None = None
) -> ExecutorSpec:
    """``"local"``, ``"ray"`` or ``"ray:ADDRESS"`` as an :class:`ExecutorSpec`."""
    value = (text or "local").strip()
    for name, n in (("workers", workers), ("worker-threads", worker_threads)):
        if n is not None and n < 1:
            raise EdgeserError(f"--{name} must be >= 1, got {n}")
    if value == "local":
        return ExecutorSpec("local", None, workers, worker_threads)
    if value == "ray":
        return ExecutorSpec("ray", None, workers, worker_threads)
    if value.startswith("ray:") and value[4:].strip():
        return ExecutorSpec("ray", value[4:].strip(), workers, worker_threads)
    raise EdgeserError(
        f"--executor {value!r}: use local, ray or ray:ADDRESS "
        "(ray:auto for the cluster this machine belongs to)"
    )


_LOCAL = ExecutorSpec()
_CURRENT: contextvars.ContextVar[ExecutorSpec | None] = contextvars.ContextVar(
    "edgeser_executor", default=None
)


def current_executor() -> ExecutorSpec:
    """The executor set by the innermost :func:`use_executor` (default ``local``)."""
    return _CURRENT.get() or _LOCAL


@contextlib.contextmanager
def use_executor(spec: ExecutorSpec) -> Iterator[ExecutorSpec]:
    """Run the enclosed work (feature extraction) on ``spec``'s executor."""
    token = _CURRENT.set(spec)
    try:
        yield spec
    finally:
        _CURRENT.reset(token)


def import_ray() -> ModuleType:
    """``ray``, or :class:`EdgeserError` naming the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise EdgeserError(f"--executor ray needs Ray: {RAY_EXTRA}") from None
    return ray


def connect_ray(spec: ExecutorSpec) -> ModuleType:
    """``ray``, initialised for ``spec`` (once per process; Ray shuts down at exit).

    A process already connected keeps its connection (a library caller may have called
    ``ray.init`` itself).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    options = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "configure_logging": False,
    }
    try:
        if spec.address is None:
            ray.init(num_cpus=os.cpu_count() or 1, **options)
        else:
            ray.init(address=spec.address, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = spec.address or "a local instance"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgeserError(
            f"--executor {spec}: cannot start or reach Ray at {where} ({first[:200]})"
        ) from None
    log.info("ray: %s, %s CPUs", spec, int(ray.cluster_resources().get("CPU", 0)))
    return ray
