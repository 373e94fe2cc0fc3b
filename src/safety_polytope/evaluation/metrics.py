"""Detection metrics with **unsafe (label 1) as the positive class**, always.

Every rate here counts unsafe examples as positives: recall/TPR is the share of unsafe examples
flagged, FPR the share of safe examples flagged, AUPRC the average precision of the unsafe class.
A detector flags an example when ``score > threshold`` (strictly greater), the convention of the
polytope (safe ⇔ ``max_k v_k ≤ 0``) and of :func:`threshold_for_fpr`.

The ranking metrics are computed here in numpy (scikit-learn is an optional dependency) and the
tests check them against scikit-learn. A metric that is undefined for the data, e.g. AUROC with a
single class, is NaN: it is never replaced by a number computed from constant or missing scores.

>>> import numpy as np
>>> m = detection_metrics(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]), threshold=0.5)
>>> m.auroc, m.recall, m.fpr
(0.75, 0.5, 0.5)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, fields
from numbers import Real
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from rich.table import Table

from ..errors import InputError

if TYPE_CHECKING:
    from ..datasets.records import Record

logger = logging.getLogger(__name__)

ArrayLike = Any  # np.ndarray | torch.Tensor | Sequence[float]: anything 1-D or 2-D and numeric
Model = TypeVar("Model")

NAN = float("nan")
FPR_TARGETS = (0.01, 0.05)  # the operating points DetectionMetrics reports TPR at


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        return (t.float() if t.is_floating_point() and t.dtype != torch.float64 else t).numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be a numeric array; could not convert it: {e}") from None


def _as_scores(x: ArrayLike, name: str = "scores") -> np.ndarray:
    """``x`` as a float64 ``(n,)`` array; refuses other shapes, empty input and NaN.

    Infinite scores are allowed: they still rank.
    """
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D (one score per example); got shape {a.shape}. "
                         f"Flatten it or pass one column.")
    if a.size == 0:
        raise InputError(f"{name} is empty; metrics need at least one example.")
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric; got dtype {a.dtype}.")
    a = a.astype(np.float64)
    nan = np.flatnonzero(np.isnan(a))
    if nan.size:
        raise InputError(f"{name} has {nan.size} NaN value(s) (rows {_preview(nan)}); a NaN score "
                         f"cannot be ranked. Check the features of those rows for NaN/inf.")
    return a


def _as_labels(y: ArrayLike, name: str = "y_true", *, what: str = "labels") -> np.ndarray:
    """``y`` as an int64 ``(n,)`` array of 0/1 (1 = unsafe); bools are accepted."""
    a = _to_numpy(y, name)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D; got shape {a.shape}.")
    if a.size == 0:
        raise InputError(f"{name} is empty; metrics need at least one example.")
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold 0/1 {what}; got dtype {a.dtype}.")
    bad = np.flatnonzero(~np.isin(a, (0, 1)))
    if bad.size:
        shown = ", ".join(repr(v.item()) for v in np.unique(a[bad])[:5])
        raise InputError(f"{name} holds values other than 0 and 1 ({shown}) at rows "
                         f"{_preview(bad)}; {what} must be 1 (unsafe) or 0 (safe).")
    return a.astype(np.int64)


def _preview(rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in rows[:limit])
    return shown + (", ..." if rows.size > limit else "")


def _same_length(**lengths: int) -> None:
    if len(set(lengths.values())) > 1:
        got = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise InputError(f"Inputs must have one entry per example, but {got}.")


def _check_real(value: Any, name: str, lo: float, hi: float, hi_open: bool) -> float:
    v = float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(v) and lo <= v and (v < hi if hi_open else v <= hi)):
        bracket = ")" if hi_open else "]"
        raise InputError(f"{name} must be a number in [{lo}, {hi}{bracket}; got {value!r}.")
    return v


# --------------------------------------------------------------------------- curves


def roc_points(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of unsafe-vs-safe: ``(fpr, tpr, thresholds)``, each ``(m + 1,)``.

    Point 0 is ``(0, 0)`` (threshold ``+inf``: nothing flagged); point i ≥ 1 flags every example
    whose score is ``≥ thresholds[i]``, one point per distinct score, from high to low. A group
    of tied scores is one step, so the curve moves diagonally through it: no point splits a tie.
    Rates are NaN where a class is absent.
    """
    y = _as_labels(y_true)
    s = _as_scores(scores)
    _same_length(y_true=y.size, scores=s.size)
    return _roc(y, s)


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # last index of each run of equal scores (compare values, not differences: inf - inf is NaN)
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    tps = np.cumsum(y_sorted)[ends]
    fps = (ends + 1) - tps
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0, tps] / n_pos if n_pos else np.full(ends.size + 1, NAN)
        fpr = np.r_[0, fps] / n_neg if n_neg else np.full(ends.size + 1, NAN)
    return fpr, tpr, np.r_[np.inf, s_sorted[ends]]


def _auroc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area: ties count one half, as in the Mann-Whitney U statistic."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Σ_i (R_i − R_{i−1}) · P_i over distinct thresholds: the step-wise (not interpolated)
    average precision of the unsafe class, as scikit-learn's ``average_precision_score``."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    tps = np.cumsum(y_sorted)[ends]
    precision = tps / (ends + 1)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The best TPR among ROC vertices whose FPR ≤ target (see ``DetectionMetrics``)."""
    if np.isnan(fpr[0]) or np.isnan(tpr[0]):
        return NAN
    ok = np.flatnonzero(fpr <= target)  # fpr is non-decreasing, and point 0 is (0, 0)
    return float(tpr[ok[-1]])


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class DetectionMetrics:
    """Unsafe-vs-safe detection quality on one evaluation set (unsafe = positive class).

    Threshold metrics flag ``score > threshold``. NaN marks a metric that is undefined here:

    - ``recall``, ``tpr_at_*``, ``auroc``, ``auprc``: NaN without unsafe examples;
    - ``fpr``, ``tpr_at_*``, ``auroc``, ``auprc``: NaN without safe examples (AUPRC would be 1
      for *any* scores, which says nothing about the detector);
    - ``precision``: NaN when nothing is flagged (0/0);
    - ``f1`` = 2TP / (2TP + FP + FN): NaN only with no unsafe examples and nothing flagged.

    ``tpr_at_1fpr`` / ``tpr_at_5fpr``: the best TPR over ROC vertices whose FPR ≤ 1% / 5%, i.e.
    the best a deterministic threshold achieves. Ties are never split: a run of equal scores is
    flagged all together or not at all, so when a tie straddles the target the vertex before it
    counts, and no point is interpolated along the diagonal (which would need random
    tie-breaking). With n_safe safe examples, FPR moves in steps of 1/n_safe: below 100 safe
    examples, 1% FPR means no false positive at all.
    """

    n: int
    n_unsafe: int
    n_safe: int
    threshold: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    fpr: float
    auroc: float
    auprc: float
    tpr_at_1fpr: float
    tpr_at_5fpr: float

    def to_dict(self) -> dict[str, int | float | None]:
        """Plain Python numbers, JSON-safe: an undefined (NaN) metric becomes ``None``."""
        out: dict[str, int | float | None] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if isinstance(v, float) and math.isnan(v) else v
        return out


def _ratio(num: int, den: int) -> float:
    return num / den if den else NAN


def detection_metrics(y_true: ArrayLike, scores: ArrayLike, threshold: float = 0.0
                      ) -> DetectionMetrics:
    """Threshold and ranking metrics of ``scores`` (higher = more unsafe) against ``y_true``.

    Args:
        y_true: ``(n,)`` labels, 1 = unsafe (positive), 0 = safe; numpy, torch or a list.
        scores: ``(n,)`` detection scores, e.g. ``SafetyPolytope.decision_function``; ±inf rank
            fine, NaN is refused.
        threshold: an example is flagged unsafe when ``score > threshold`` (default 0: the
            polytope's boundary and a logistic model's 50%).

    Raises:
        InputError: mismatched lengths, empty input, NaN scores, labels other than 0/1, or a
            non-finite threshold.

    Constant scores give AUROC 0.5 and AUPRC equal to the unsafe share, the right values for a
    detector that cannot rank; a warning is logged, since it usually means predictions or a
    placeholder were passed instead of scores.
    """
    y = _as_labels(y_true)
    s = _as_scores(scores)
    _same_length(y_true=y.size, scores=s.size)
    if not (isinstance(threshold, Real) and not isinstance(threshold, bool)
            and math.isfinite(threshold)):
        raise InputError(f"threshold must be a finite number; got {threshold!r}.")
    n_unsafe = int(y.sum())
    n_safe = int(y.size - n_unsafe)
    flagged = s > threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = n_unsafe - tp
    tn = n_safe - fp
    if s.size > 1 and np.all(s == s[0]):
        logger.warning("all %d scores equal %r: ranking metrics carry no information (AUROC "
                       "0.5). Were predictions passed instead of scores?", s.size, s[0])
    fpr, tpr, _ = _roc(y, s)
    both = n_unsafe > 0 and n_safe > 0
    if not both:
        logger.info("only %s examples: AUROC, AUPRC and TPR@FPR are undefined (NaN)",
                    "unsafe" if n_safe == 0 else "safe")
    return DetectionMetrics(
        n=int(y.size), n_unsafe=n_unsafe, n_safe=n_safe, threshold=float(threshold),
        accuracy=(tp + tn) / y.size,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, n_unsafe),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        fpr=_ratio(fp, n_safe),
        auroc=_auroc(fpr, tpr) if both else NAN,
        auprc=_average_precision(y, s) if both else NAN,
        tpr_at_1fpr=_tpr_at_fpr(fpr, tpr, FPR_TARGETS[0]),
        tpr_at_5fpr=_tpr_at_fpr(fpr, tpr, FPR_TARGETS[1]),
    )


def threshold_for_fpr(scores_safe: ArrayLike, target_fpr: float) -> float:
    """The smallest threshold t with ``mean(scores_safe > t) ≤ target_fpr``.

    Flagging is strict (``score > t``), so t is itself one of the safe scores: the (k+1)-th
    largest, where k = the most false positives the target allows (k / n ≤ target_fpr). Any
    lower threshold flags more than k safe examples. Ties at t can make the realised FPR lower
    than the target, never higher. Calibration uses it on held-out safe scores; the realised FPR
    on new safe data matches the target only as far as those scores are representative.

    Args:
        scores_safe: ``(n,)`` scores of safe examples (higher = more unsafe).
        target_fpr: in ``[0, 1)``; 0 gives the largest safe score.

    Raises:
        InputError: empty or non-1-D scores, NaN scores, or a target outside ``[0, 1)``.
    """
    s = _as_scores(scores_safe, "scores_safe")
    target = _check_real(target_fpr, "target_fpr", 0.0, 1.0, hi_open=True)
    n = s.size
    k = min(math.floor(target * n), n - 1)
    # the float product can round either way; settle k on the exact comparison used downstream
    while k + 1 < n and (k + 1) / n <= target:
        k += 1
    while k > 0 and k / n > target:
        k -= 1
    return float(np.sort(s)[::-1][k])


# --------------------------------------------------------------------------- groups


def per_group_recall(y_true: ArrayLike, y_pred: ArrayLike, groups: Sequence[Hashable]
                     ) -> dict[Hashable, dict[str, int | float]]:
    """Per-group flag rates, e.g. per harm category or per source, in order of first appearance.

    Each group maps to ``{"n", "n_unsafe", "n_safe", "recall", "flag_rate"}``: ``recall`` is the
    share of the group's unsafe examples flagged (TPR), ``flag_rate`` the share of its safe
    examples flagged (FPR). Both keys are always present so rows tabulate uniformly; a rate is
    NaN when the group has no example of that label (a safe-only group such as ``"benign"`` has
    ``recall`` NaN and reports ``flag_rate``).

    Args:
        y_true: ``(n,)`` labels, 1 = unsafe.
        y_pred: ``(n,)`` 0/1 decisions (threshold scores first: ``scores > threshold``).
        groups: ``(n,)`` a hashable group key per example, e.g. ``[r.category for r in records]``.

    Raises:
        InputError: mismatched lengths, or labels/decisions other than 0/1.
    """
    y = _as_labels(y_true)
    p = _as_labels(y_pred, "y_pred", what="decisions (threshold scores first)")
    g = list(groups)
    _same_length(y_true=y.size, y_pred=p.size, groups=len(g))
    index: dict[Hashable, list[int]] = {}
    for i, key in enumerate(g):
        index.setdefault(key, []).append(i)
    out: dict[Hashable, dict[str, int | float]] = {}
    for key, rows in index.items():
        yy, pp = y[rows], p[rows]
        n_unsafe = int(yy.sum())
        n_safe = len(rows) - n_unsafe
        out[key] = {"n": len(rows), "n_unsafe": n_unsafe, "n_safe": n_safe,
                    "recall": _ratio(int(pp[yy == 1].sum()), n_unsafe),
                    "flag_rate": _ratio(int(pp[yy == 0].sum()), n_safe)}
    return out


# --------------------------------------------------------------------------- cross-source


def _as_matrix(X: ArrayLike, name: str) -> np.ndarray:
    a = _to_numpy(X, name)
    if a.ndim != 2 or a.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a numeric (n, d) matrix; got shape {a.shape}, dtype "
                         f"{a.dtype}.")
    return a.astype(np.float32, copy=False)


def _source_set(sources: Collection[str] | str, what: str) -> frozenset[str]:
    if isinstance(sources, str):
        return frozenset((sources,))
    out = frozenset(sources)
    if not out:
        raise InputError(f"{what} is empty; name at least one source.")
    return out


def cross_source_table(
    records: Sequence[Record],
    features: ArrayLike,
    fit_fn: Callable[[np.ndarray, np.ndarray], Model],
    score_fn: Callable[[Model, np.ndarray], ArrayLike],
    groups: Sequence[tuple[Collection[str], Collection[str]]],
    *,
    heldout_safe: ArrayLike | None = None,
    threshold: float = 0.0,
) -> list[dict[str, Any]]:
    """Generalisation to unseen sources: fit on some sources, score sources never trained on.

    For each ``(train_sources, test_sources)`` in ``groups`` (a source name or a collection of
    names, disjoint), ``fit_fn`` sees only the rows of ``records`` from ``train_sources`` and the
    metrics use only rows from ``test_sources``. Harmful-prompt sources usually hold only unsafe
    examples; such a test set is scored together with ``heldout_safe``, safe features kept out of
    ``records`` so no model can have trained on them, which makes AUROC defined. Test sets that
    hold safe examples of their own use those alone.

    Args:
        records: ``n`` records; ``records[i]`` labels (1 = unsafe) and names the source of
            ``features[i]``.
        features: ``(n, d)`` features aligned with ``records`` (numpy or torch).
        fit_fn: ``fit_fn(X, y) -> model`` with ``X`` float32 ``(n_train, d)``, ``y`` int64 0/1,
            e.g. ``lambda X, y: LogisticProbe().fit(X, y)``.
        score_fn: ``score_fn(model, X) -> (m,)`` scores, higher = more unsafe, e.g.
            ``lambda m, X: m.decision_function(X)``. For a calibrated model, return scores
            minus its threshold (or pass ``threshold``).
        groups: ``[(train_sources, test_sources), ...]``, one output row each.
        heldout_safe: ``(m, d)`` features of safe examples not in ``records``; required when a
            test set has no safe examples.
        threshold: ``recall_at_threshold`` / ``fpr_at_threshold`` flag ``score > threshold``.

    Returns:
        One dict per group: ``train_sources``, ``test_sources`` (sorted tuples), ``n_train``,
        ``n_test`` (scored examples), ``n_test_unsafe``, ``n_test_safe``, ``safe_from``
        (``"test_sources"`` or ``"heldout_safe"``), ``auroc``, ``auprc``, ``tpr_at_5fpr``,
        ``recall_at_threshold``, ``fpr_at_threshold``.

    Raises:
        InputError: misaligned inputs, unknown or overlapping sources, a training set without
            both labels, a test set without unsafe examples, a test set without safe examples
            and no ``heldout_safe``, or ``heldout_safe`` rows identical to training rows.
    """
    X = _as_matrix(features, "features")
    if X.shape[0] != len(records):
        raise InputError(f"features has {X.shape[0]} rows but records has {len(records)}; "
                         f"features[i] must be the features of records[i].")
    y = np.array([r.label for r in records], dtype=np.int64)
    src = np.array([r.source for r in records], dtype=object)
    known = set(src.tolist())
    safe_X = None
    if heldout_safe is not None:
        safe_X = _as_matrix(heldout_safe, "heldout_safe")
        if safe_X.shape[1] != X.shape[1] or safe_X.shape[0] == 0:
            raise InputError(f"heldout_safe must be (m >= 1, {X.shape[1]}) like features; got "
                             f"shape {safe_X.shape}.")
    rows = []
    for train_sources, test_sources in groups:
        train = _source_set(train_sources, "train_sources")
        test = _source_set(test_sources, "test_sources")
        unknown = (train | test) - known
        if unknown:
            raise InputError(f"unknown source(s) {sorted(unknown)}; the records hold "
                             f"{sorted(known)}.")
        if train & test:
            raise InputError(f"sources {sorted(train & test)} are in both train and test; a "
                             f"cross-source test needs disjoint sources.")
        tr = np.isin(src, list(train))
        te = np.isin(src, list(test))
        if len(set(y[tr].tolist())) < 2:
            raise InputError(f"training sources {sorted(train)} hold only "
                             f"{'unsafe' if y[tr].all() else 'safe'} examples; add a source with "
                             f"the other label to train_sources.")
        X_test, y_test = X[te], y[te]
        if y_test.sum() == 0:
            raise InputError(f"test sources {sorted(test)} hold no unsafe examples; recall and "
                             f"AUROC need some.")
        safe_from = "test_sources"
        if y_test.sum() == y_test.size:
            if safe_X is None:
                raise InputError(f"test sources {sorted(test)} hold only unsafe examples; pass "
                                 f"heldout_safe=(features of safe examples kept out of training) "
                                 f"so AUROC is defined.")
            _check_no_overlap(safe_X, X[tr], train)
            X_test = np.concatenate([X_test, safe_X])
            y_test = np.r_[y_test, np.zeros(safe_X.shape[0], dtype=np.int64)]
            safe_from = "heldout_safe"
        model = fit_fn(X[tr], y[tr])
        m = detection_metrics(y_test, score_fn(model, X_test), threshold=threshold)
        row = {"train_sources": tuple(sorted(train)), "test_sources": tuple(sorted(test)),
               "n_train": int(tr.sum()), "n_test": m.n, "n_test_unsafe": m.n_unsafe,
               "n_test_safe": m.n_safe, "safe_from": safe_from, "auroc": m.auroc,
               "auprc": m.auprc, "tpr_at_5fpr": m.tpr_at_5fpr,
               "recall_at_threshold": m.recall, "fpr_at_threshold": m.fpr}
        logger.info("cross-source %s -> %s: AUROC %.3f, recall %.3f", row["train_sources"],
                    row["test_sources"], m.auroc, m.recall)
        rows.append(row)
    return rows


def _check_no_overlap(safe_X: np.ndarray, X_train: np.ndarray, train: frozenset[str]) -> None:
    """Refuse held-out safe rows that equal a training row byte for byte (a leak)."""
    seen = {row.tobytes() for row in np.ascontiguousarray(X_train)}
    dup = [i for i, row in enumerate(np.ascontiguousarray(safe_X)) if row.tobytes() in seen]
    if dup:
        raise InputError(f"heldout_safe rows {_preview(np.array(dup))} equal training rows from "
                         f"{sorted(train)}; held-out safe examples must not be trained on.")


# --------------------------------------------------------------------------- table

# (field, header, higher is better)
_TABLE_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("auroc", "AUROC", True), ("auprc", "AUPRC", True), ("tpr_at_1fpr", "TPR@1%FPR", True),
    ("tpr_at_5fpr", "TPR@5%FPR", True), ("recall", "recall", True), ("fpr", "FPR", False),
    ("precision", "precision", True), ("f1", "F1", True), ("accuracy", "accuracy", True),
)


def format_metrics_table(rows: Mapping[str, DetectionMetrics],
                         title: str = "Detection (unsafe = positive)", digits: int = 3) -> Table:
    """A rich Table comparing methods side by side, one row per name; the best value of each
    column is bold, undefined metrics show as ``n/a``."""
    table = Table(title=title)
    table.add_column("method")
    for header in ("n", "unsafe", "safe", "threshold"):
        table.add_column(header, justify="right")
    for _, header, _ in _TABLE_COLUMNS:
        table.add_column(header, justify="right")
    best: dict[str, float] = {}
    for name, _, higher in _TABLE_COLUMNS:
        vals = [getattr(m, name) for m in rows.values() if not math.isnan(getattr(m, name))]
        if len(rows) > 1 and vals:
            best[name] = max(vals) if higher else min(vals)

    def cell(name: str, v: float) -> str:
        if math.isnan(v):
            return "n/a"
        text = f"{v:.{digits}f}"
        return f"[bold]{text}[/bold]" if best.get(name) == v else text

    for method, m in rows.items():
        table.add_row(method, str(m.n), str(m.n_unsafe), str(m.n_safe), f"{m.threshold:.4g}",
                      *(cell(f, getattr(m, f)) for f, _, _ in _TABLE_COLUMNS))
    return table
