"""How sure a figure is: bootstrap confidence intervals, paired tests, spread over seeds.

Every WA / UA / macro-F1 edgeser reports gets a 95 % interval, and every difference
between two settings evaluated on the same test utterances (with vs without CREMA-D,
model A vs model B) gets a paired test. What is resampled, and why:

* **Unit: utterances, resampled within each test speaker** (a stratified bootstrap: each
  speaker keeps its number of test utterances). Utterances of one speaker are correlated,
  so the honest unit for *new speakers* would be the speaker (a cluster bootstrap), but a
  speaker-independent fold tests on one session or a few actors (IEMOCAP: 2 speakers per
  fold, 10 in all; RAVDESS-mini: 2), and a bootstrap over 2 clusters is degenerate (3
  distinct resamples). Resampling within speakers keeps every fold's speaker mix fixed,
  so the interval measures the uncertainty from the finite sample of utterances *of these
  speakers* and is conditional on them; the speaker-to-speaker variation shows in the sd
  over folds, which the reports print beside it, and training randomness in the spread
  over seeds (``--seeds``).
* **Folds and seeds**: each fold is resampled independently (its own test speakers); a
  figure averaged over folds (and seeds) is recomputed from the resampled confusions of
  every fold, so its interval is that of the mean the tables print. All seeds of a fold
  share the same resample (they predict the same utterances).
* **Interval**: the percentile interval of ``n_resamples`` resamples (default 1000).
  Resampling is done on confusion counts: the resample of a speaker's ``n`` utterances
  is ``n`` indices drawn among them, whose (true, predicted) cells one ``bincount``
  counts for all resamples at once. Deterministic: a seeded :class:`numpy.random.Generator` per fold
  (``seed``, fold index), on utterances sorted by id, so two settings tested on the same
  folds are resampled identically.
* **Paired difference** (B − A on the same folds and utterances): the *paired
  bootstrap* (the same resample of utterances for both, so what the two have in common
  cancels) gives the difference's 95 % interval and a two-sided p-value (twice the
  smaller tail share of resampled differences on either side of 0, so p < 0.05 exactly
  when the interval excludes 0); an *approximate randomisation test* (each utterance's
  predictions of A and B swapped with probability ½, all seeds together; Noreen 1989,
  the usual significance test for non-additive metrics such as UA and macro-F1) gives a
  second p-value that assumes nothing about the shape of the resampled distribution.
  McNemar's test is not used: it covers accuracy of one pair of predictions only, not
  UA or F1 averaged over folds and seeds. A claim is **supported** only when its
  interval excludes 0 (:func:`verdict`).
* **Fold-variance change** (the paper's "CREMA-D cuts fold variance by 32 %"): its
  interval resamples the folds (the same fold indices for both settings) on top of the
  utterance bootstrap; with 5 folds it is wide, and the report says the change is not
  established whenever it includes 0.

Metrics are computed from confusion counts with the conventions of
:mod:`edgeser.evaluation.metrics` (UA over the classes present in the resample's truth,
macro-F1 over classes true or predicted; per-class scores 0 where undefined), so the
point estimates equal ``compute_metrics``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeser.core.errors import EdgeserError
from edgeser.data.labels import LABELS

__all__ = [
    "LEVEL",
    "EvalSet",
    "bootstrap_ci",
    "interval",
    "paired_test",
    "summarize_seeds",
    "verdict",
]

#: Confidence level of every interval edgeser reports.
LEVEL = 0.95
#: Metrics with intervals (results.json's keys).
SCALARS: tuple[str, ...] = ("wa", "ua", "macro_f1")
#: How the intervals are made, as recorded beside them in results.json.
METHOD = (
    "percentile bootstrap over test utterances, resampled within each test speaker "
    "(each fold on its own; seeds share the resample)"
)


@dataclass(frozen=True)
class EvalSet:
    """The predictions on one test set (a fold): ``y_true`` ``(n,)``, ``y_pred`` ``(S, n)``
    with one row per training run (seed), ``groups`` ``(n,)`` the speaker of each
    utterance; utterances sorted by id (:meth:`build`)."""

    ids: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    groups: np.ndarray

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        y_true: Sequence[int],
        y_preds: Sequence[Sequence[int]],
        groups: Sequence[str],
    ) -> EvalSet:
        """From per-run predictions over the same ``ids`` (in the order of ``ids``)."""
        n = len(ids)
        pred = np.asarray(y_preds, dtype=np.int64).reshape(len(y_preds), -1)
        if len(y_true) != n or len(groups) != n or pred.shape[1] != n or not len(pred):
            raise ValueError(
                f"{n} ids, {len(y_true)} labels, {len(groups)} speakers and "
                f"predictions of shape {pred.shape} do not match"
            )
        if len(set(ids)) != n:
            raise ValueError("a test set lists an utterance twice")
        order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
        return cls(
            tuple(ids[i] for i in order),
            np.asarray(y_true, np.int64)[order],
            pred[:, order],
            np.asarray(groups, dtype=object)[order],
        )

    @property
    def runs(self) -> int:
        return int(self.y_pred.shape[0])


# --------------------------------------------------------------------- confusion counts
def _onehot(y_true: np.ndarray, y_pred: np.ndarray, c: int) -> np.ndarray:
    """``(S, n, c*c)`` one-hot of the (true, predicted) cell of every utterance and run."""
    cells = y_true[None, :] * c + y_pred
    out = np.zeros((*cells.shape, c * c), dtype=np.float64)
    np.put_along_axis(out, cells[..., None], 1.0, axis=-1)
    return out


def _fold_rng(seed: int, fold: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(fold), 0x5E5])


def _confusions(ts: EvalSet, c: int) -> np.ndarray:
    """``(S, c, c)`` confusion counts of every run on the test set itself."""
    k = c * c
    cells = ts.y_true[None, :] * c + ts.y_pred
    return np.stack([np.bincount(row, minlength=k) for row in cells]).reshape(-1, c, c)


def _resampled_confusions(ts: EvalSet, b: int, rng: np.random.Generator, c: int) -> np.ndarray:
    """``(b, S, c, c)`` confusion counts of ``b`` resamples: each speaker's utterances
    drawn with replacement, as many as it has; every run (seed) on the same draw."""
    k = c * c
    cells = ts.y_true[None, :] * c + ts.y_pred  # (S, n)
    conf = np.zeros((b, ts.runs, k), dtype=np.float64)
    offset = (np.arange(b) * k)[:, None]
    for g in sorted(set(ts.groups.tolist()), key=str):
        idx = np.flatnonzero(ts.groups == g)
        draw = idx[rng.integers(0, len(idx), size=(b, len(idx)))]  # (b, n_g)
        for s in range(ts.runs):
            flat = (offset + cells[s][draw]).ravel()
            conf[:, s] += np.bincount(flat, minlength=b * k).reshape(b, k)
    return conf.reshape(b, ts.runs, c, c)


def scores(conf: np.ndarray, metric: str, labels: Sequence[str] = LABELS) -> np.ndarray:
    """A metric of confusion counts ``(..., c, c)`` (rows true, columns predicted):
    ``wa``, ``ua``, ``macro_f1``, or one class's ``recall:<label>`` / ``f1:<label>``.
    Conventions of :func:`edgeser.evaluation.metrics.compute_metrics`."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    row, col = conf.sum(-1), conf.sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(row > 0, tp / np.where(row > 0, row, 1), 0.0)
        f1 = np.where(row + col > 0, 2 * tp / np.where(row + col > 0, row + col, 1), 0.0)
    if metric == "wa":
        return tp.sum(-1) / np.maximum(row.sum(-1), 1)
    if metric == "ua":
        present = row > 0
        return (recall * present).sum(-1) / np.maximum(present.sum(-1), 1)
    if metric == "macro_f1":
        seen = (row + col) > 0
        return (f1 * seen).sum(-1) / np.maximum(seen.sum(-1), 1)
    kind, _, label = metric.partition(":")
    if kind in ("recall", "f1") and label in labels:
        i = list(labels).index(label)
        return (recall if kind == "recall" else f1)[..., i]
    raise ValueError(f"unknown metric {metric!r}")


def _percentile(values: np.ndarray) -> list[float]:
    """The central ``LEVEL`` percentile interval of resampled values (NaN dropped), its
    ends resampled values themselves, taken on the outside (``lower``/``higher``, never
    interpolated between two resamples). Metrics on a few dozen utterances take few
    distinct values and many resamples tie, often at 0: an interpolated end could sit a
    hair above 0 while 2.5 % of the resampled differences are at or below it. So an
    interval excludes 0 exactly when the bootstrap p-value (:func:`_two_sided`) is below
    0.05 (for the default 1000 resamples)."""
    v = values[np.isfinite(values)]
    if not v.size:
        return [float("nan"), float("nan")]
    lo = np.quantile(v, (1 - LEVEL) / 2, method="lower")
    hi = np.quantile(v, (1 + LEVEL) / 2, method="higher")
    return [float(lo), float(hi)]


@dataclass
class _Resampled:
    """Per-fold confusions of the test sets themselves and of every resample."""

    point: list[np.ndarray]  # per fold (S, c, c)
    boot: list[np.ndarray]  # per fold (b, S, c, c)


def _resample(folds: Sequence[EvalSet], n_resamples: int, seed: int, c: int) -> _Resampled:
    if not folds:
        raise ValueError("no test sets")
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    point, boot = [], []
    for k, ts in enumerate(folds):
        point.append(_confusions(ts, c))
        boot.append(_resampled_confusions(ts, n_resamples, _fold_rng(seed, k), c))
    return _Resampled(point, boot)


def _fold_scores(
    r: _Resampled, metric: str, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(F,)`` point and ``(b, F)`` resampled fold scores, averaged over seeds."""
    point = np.array([scores(p, metric, labels).mean() for p in r.point])
    boot = np.stack([scores(b, metric, labels).mean(-1) for b in r.boot], axis=1)
    return point, boot


def _pooled_scores(r: _Resampled, metric: str, labels: Sequence[str]) -> tuple[float, np.ndarray]:
    """The metric of the folds' pooled confusion, per seed then averaged over seeds."""
    point = scores(sum(r.point), metric, labels).mean()
    boot = scores(sum(r.boot), metric, labels).mean(-1)
    return float(point), boot


def bootstrap_ci(
    folds: Sequence[EvalSet],
    *,
    metrics: Sequence[str] = SCALARS,
    n_resamples: int = 1000,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """95 % intervals of a setting's figures over its folds (and seeds)::

    {"level", "method", "n_resamples",
     "mean": {metric: [lo, hi]},      # the mean over folds (and seeds)
     "pooled": {metric: [lo, hi]},    # the folds' pooled predictions
     "folds": [{metric: [lo, hi]}]}   # each fold (mean over its seeds)
    """
    c = len(labels)
    r = _resample(folds, n_resamples, seed, c)
    out: dict[str, Any] = {
        "level": LEVEL,
        "method": METHOD,
        "n_resamples": n_resamples,
        "mean": {},
        "pooled": {},
        "folds": [{} for _ in folds],
    }
    for m in metrics:
        _, fold_boot = _fold_scores(r, m, labels)
        out["mean"][m] = _percentile(fold_boot.mean(1))
        out["pooled"][m] = _percentile(_pooled_scores(r, m, labels)[1])
        for k in range(len(folds)):
            out["folds"][k][m] = _percentile(fold_boot[:, k])
    return out


def interval(
    ts: EvalSet,
    *,
    metrics: Sequence[str] = SCALARS,
    n_resamples: int = 1000,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """95 % intervals of one test set's figures: ``{"level", "method", "n_resamples",
    metric: [lo, hi]}``."""
    ci = bootstrap_ci([ts], metrics=metrics, n_resamples=n_resamples, seed=seed, labels=labels)
    return {"level": LEVEL, "method": METHOD, "n_resamples": n_resamples, **ci["mean"]}


# ------------------------------------------------------------------------ paired tests
def _check_paired(a: Sequence[EvalSet], b: Sequence[EvalSet]) -> None:
    if len(a) != len(b):
        raise EdgeserError(f"a paired comparison needs the same folds: {len(a)} vs {len(b)}")
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.ids != y.ids or not np.array_equal(x.y_true, y.y_true):
            raise EdgeserError(
                f"a paired comparison needs the same test utterances: fold {k + 1} differs"
            )


def _two_sided(diffs: np.ndarray) -> float:
    """Bootstrap p-value: twice the smaller share of resampled differences at or beyond 0
    on either side (+1 smoothing), at most 1."""
    d = diffs[np.isfinite(diffs)]
    n = d.size
    below = (np.count_nonzero(d <= 0) + 1) / (n + 1)
    above = (np.count_nonzero(d >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def _permutation_p(
    a: Sequence[EvalSet],
    b: Sequence[EvalSet],
    observed: Mapping[str, float],
    n_resamples: int,
    seed: int,
    labels: Sequence[str],
) -> dict[str, float | None]:
    """Approximate randomisation: each utterance's A and B predictions (all runs) swapped
    with probability ½; per metric, p = share of swapped differences at least as large as
    the ``observed`` one (+1 smoothing)."""
    if any(x.runs != y.runs for x, y in zip(a, b, strict=True)):
        return dict.fromkeys(observed)
    c = len(labels)
    diffs = {m: np.zeros(n_resamples) for m in observed}
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        rng = np.random.default_rng([int(seed), k, 0xA11])
        hot_a = _onehot(x.y_true, x.y_pred, c)
        hot_b = _onehot(y.y_true, y.y_pred, c)
        swap = rng.integers(0, 2, size=(n_resamples, len(x.ids))).astype(np.float64)
        delta = np.stack([swap @ d for d in hot_b - hot_a], axis=1)  # (P, S, c*c)
        conf_a = (hot_a.sum(1)[None] + delta).reshape(n_resamples, x.runs, c, c)
        conf_b = (hot_b.sum(1)[None] - delta).reshape(n_resamples, x.runs, c, c)
        for m in observed:
            diffs[m] += (
                scores(conf_b, m, labels).mean(-1) - scores(conf_a, m, labels).mean(-1)
            ) / len(a)
    return {
        m: float((np.count_nonzero(np.abs(d) >= abs(observed[m]) - 1e-12) + 1) / (n_resamples + 1))
        for m, d in diffs.items()
    }


def _variance_change_ci(fa: np.ndarray, fb: np.ndarray, n_resamples: int, seed: int) -> list[float]:
    """Interval of ``var_b / var_a - 1`` over folds: the folds resampled (the same for both
    settings) on top of the utterance resamples ``fa``, ``fb`` ``(b, F)``."""
    f = fa.shape[1]
    if f < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng([int(seed), 0xF01D])
    pick = rng.integers(0, f, size=(n_resamples, f))
    rows = np.arange(n_resamples)[:, None] % fa.shape[0]
    va = fa[rows, pick].var(axis=1, ddof=1)
    vb = fb[rows, pick].var(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        change = np.where(va > 0, vb / np.where(va > 0, va, 1) - 1, np.nan)
    return _percentile(change)


def paired_test(
    a: Sequence[EvalSet],
    b: Sequence[EvalSet],
    *,
    metrics: Sequence[str] = SCALARS,
    n_resamples: int = 1000,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
    variance: bool = True,
) -> dict[str, Any]:
    """Setting B against setting A on the same folds and utterances::

        {"level", "method", "n_resamples", "folds", "n", "runs": [S_a, S_b],
         "metrics": {metric: {"a", "b", "diff", "ci95": [lo, hi], "p_bootstrap",
                              "p_permutation", "supported"}},
         "variance_change": {metric: {"value", "ci95", "supported"}}}   # variance=True

    ``a``/``b``/``diff`` are means over folds and seeds (B − A); ``supported``: the
    interval of the difference excludes 0. ``variance_change``: relative change of the
    fold variance (``var_b / var_a - 1``) of the seed-averaged fold scores, for the
    scalar metrics only.
    """
    _check_paired(a, b)
    c = len(labels)
    ra = _resample(a, n_resamples, seed, c)
    rb = _resample(b, n_resamples, seed, c)
    out: dict[str, Any] = {
        "level": LEVEL,
        "n_resamples": n_resamples,
        "folds": len(a),
        "n": int(sum(len(x.ids) for x in a)),
        "runs": [a[0].runs, b[0].runs],
        "method": (
            "paired " + METHOD + "; p_permutation: approximate randomisation "
            "(per-utterance swaps of A's and B's predictions)"
        ),
        "metrics": {},
    }
    for m in metrics:
        pa, ba = _fold_scores(ra, m, labels)
        pb, bb = _fold_scores(rb, m, labels)
        boot = bb.mean(1) - ba.mean(1)
        ci = _percentile(boot)
        out["metrics"][m] = {
            "a": float(pa.mean()),
            "b": float(pb.mean()),
            "diff": float(pb.mean() - pa.mean()),
            "ci95": ci,
            "p_bootstrap": _two_sided(boot),
            "p_permutation": None,
            "supported": excludes_zero(ci),
        }
        if variance and m in SCALARS:
            var_a = pa.var(ddof=1) if len(pa) > 1 else 0.0
            var_b = pb.var(ddof=1) if len(pb) > 1 else 0.0
            value = float(var_b / var_a - 1) if var_a > 0 else None
            vci = _variance_change_ci(ba, bb, n_resamples, seed)
            out.setdefault("variance_change", {})[m] = {
                "value": value,
                "ci95": vci,
                "supported": value is not None and excludes_zero(vci),
            }
    perm = _permutation_p(
        a, b, {m: t["diff"] for m, t in out["metrics"].items()}, n_resamples, seed, labels
    )
    for m, p in perm.items():
        out["metrics"][m]["p_permutation"] = p
    return out


def excludes_zero(ci: Sequence[float]) -> bool:
    """True when the interval ``[lo, hi]`` lies wholly on one side of 0."""
    lo, hi = float(ci[0]), float(ci[1])
    return bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))


def verdict(ci: Sequence[float]) -> str:
    """How the reports word a claim: ``supported`` only when its interval excludes 0."""
    return "supported" if excludes_zero(ci) else "not supported (interval includes 0)"


# ------------------------------------------------------------------------------- seeds
def summarize_seeds(
    seeds: Sequence[int], runs: Sequence[Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """Spread over seeds of per-fold metrics ``runs[seed][fold]``::

    {"seeds": [...], "runs": S*F,
     "mean": M,            # over all seed x fold runs
     "sd_runs": M,         # sample sd over all seed x fold runs
     "sd_seed_means": M,   # sample sd over seeds of each seed's mean over folds
     "per_seed": [{"seed", "mean": M, "std": M}]}   # M: {"wa", "ua", "macro_f1"}
    """
    if len(seeds) != len(runs) or not runs:
        raise ValueError(f"{len(seeds)} seeds but {len(runs)} runs")
    arr = np.array([[[float(f[m]) for m in SCALARS] for f in folds] for folds in runs])
    if arr.ndim != 3:
        raise ValueError("every seed needs the same folds")

    def sd(x: np.ndarray, axis: Any) -> np.ndarray:
        size = x.size if axis is None else x.shape[axis]
        return x.std(axis=axis, ddof=1) if size > 1 else np.zeros_like(x.mean(axis=axis))

    def named(v: np.ndarray) -> dict[str, float]:
        return {m: float(x) for m, x in zip(SCALARS, v, strict=True)}

    flat = arr.reshape(-1, len(SCALARS))
    seed_means = arr.mean(1)
    return {
        "seeds": [int(s) for s in seeds],
        "runs": int(flat.shape[0]),
        "mean": named(flat.mean(0)),
        "sd_runs": named(sd(flat, 0)),
        "sd_seed_means": named(sd(seed_means, 0)),
        "per_seed": [
            {"seed": int(s), "mean": named(arr[i].mean(0)), "std": named(sd(arr[i], 0))}
            for i, s in enumerate(seeds)
        ],
    }
