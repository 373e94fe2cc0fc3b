"""Detection figures for a fitted polytope, with baselines, in one harness on the same splits.

Unsafe (1) is the positive class. Every detector — the polytope, a single facet (K = 1), a
logistic probe and an MLP — is fitted on the same training rows and calibrated the same way on
the validation split (plain and borderline harmless sets, see ``training.calibrate_two_sets``),
then scored on the test split and on sources never seen in training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..datasets import Record, contamination
from ..datasets.resolve import load_data
from ..features import FeatureSpec
from ..polytope import SafetyPolytope
from ..training import FitResult, SplitFeatures, split_features
from .baselines import LogisticProbe, MLPDetector
from .metrics import detection_metrics, per_group_recall, threshold_for_fpr

logger = logging.getLogger(__name__)

UNSEEN_SOURCES: tuple[str, ...] = ("harmbench-test", "past-tense", "donotanswer")


@dataclass
class Detector:
    """A fitted scorer with a calibrated threshold (``score > threshold`` flags)."""

    name: str
    score: Callable[[Tensor], np.ndarray]
    threshold: float


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def calibrated_threshold(score: Callable[[Tensor], np.ndarray], plain: Tensor,
                         borderline: Tensor, target_fpr: float, borderline_fpr: float) -> float:
    """The higher of the thresholds meeting each safe set's false-positive target."""
    thr = threshold_for_fpr(score(plain), target_fpr)
    if len(borderline):
        thr = max(thr, threshold_for_fpr(score(borderline), borderline_fpr))
    return float(thr)


def polytope_detector(sp: SafetyPolytope, name: str = "polytope") -> Detector:
    thr = sp.threshold_ if sp.threshold_ is not None else 0.0
    return Detector(name, lambda X: _np(sp.decision_function(X)), float(thr))


def baseline_detectors(res: FitResult, target_fpr: float, borderline_fpr: float,
                       seed: int = 0) -> list[Detector]:
    """K = 1 polytope, logistic probe and MLP, fitted on the polytope's training rows and
    calibrated like it."""
    tr, va = res.train, res.validation
    params = {k: v for k, v in res.polytope.get_params().items() if v is not None}
    params["n_facets"] = 1
    made: list[tuple[str, Callable[[Tensor], np.ndarray]]] = []
    single = SafetyPolytope(**params).fit(tr.X, tr.y, validation=(va.X, va.y))
    made.append(("single facet (K=1)", lambda X: _np(single.decision_function(X))))
    probe = LogisticProbe(seed=seed).fit(_np(tr.X), _np(tr.y))
    made.append(("logistic probe", lambda X: _np(probe.decision_function(_np(X)))))
    mlp = MLPDetector(seed=seed).fit(_np(tr.X), _np(tr.y))
    made.append(("MLP", lambda X: _np(mlp.decision_function(_np(X)))))
    plain, border = va.calibration_sets()
    return [Detector(n, f, calibrated_threshold(f, plain, border, target_fpr, borderline_fpr))
            for n, f in made]


def score_split(det: Detector, split: SplitFeatures) -> dict[str, Any]:
    """Metrics on one split: overall, FPR on plain and borderline harmless, per-group recall."""
    scores = det.score(split.X)
    y = _np(split.y)
    m = detection_metrics(y, scores, threshold=det.threshold).to_dict()
    plain, border = split.calibration_sets()
    out: dict[str, Any] = {"metrics": m}
    out["fpr_plain"] = float(np.mean(det.score(plain) > det.threshold)) if len(plain) else None
    out["fpr_borderline"] = (float(np.mean(det.score(border) > det.threshold))
                             if len(border) else None)
    pred = scores > det.threshold
    unsafe = y == 1
    recs = split.records
    out["recall_by_category"] = _jsonable(per_group_recall(
        y[unsafe], pred[unsafe], [r.category for r, u in zip(recs, unsafe) if u]))
    out["recall_by_source"] = _jsonable(per_group_recall(
        y[unsafe], pred[unsafe], [r.source for r, u in zip(recs, unsafe) if u]))
    return out


def _jsonable(d: dict[Any, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(k): {kk: (None if isinstance(vv, float) and np.isnan(vv) else vv)
                     for kk, vv in v.items()} for k, v in d.items()}


def unseen_source_rows(res: FitResult, detectors: Sequence[Detector],
                       sources: Sequence[str] = UNSEEN_SOURCES, limit: int | None = None,
                       seed: int = 0, batch_size: int = 16) -> list[dict[str, Any]]:
    """Score harmful sources never trained on, against the test split's safe prompts.

    Records that are near-duplicates of any training record are removed first (HarmBench's
    standard behaviours are in both HarmBench test and the training sources) and counted.
    """
    lm, sp = res.lm, res.polytope
    layer = sp.context.layer
    spec = FeatureSpec((layer,), "last", _formatting(sp))
    train_sources = {r.source for r in res.train.records}
    safe = res.test.subset(res.test.y == 0)
    rows = []
    for name in sources:
        if name in train_sources:
            continue
        recs = [r for r in load_data([name], limit=limit, seed=seed) if r.label == 1]
        dirty = {id(r) for r in contamination(recs, res.train.records)}
        clean = [r for r in recs if id(r) not in dirty]
        if not clean:
            continue
        feats = split_features(lm, clean, spec, batch_size)
        X = torch.cat([feats.X, safe.X])
        y = np.r_[np.ones(len(clean)), np.zeros(len(safe.X))]
        for det in detectors:
            s = det.score(X)
            m = detection_metrics(y, s, threshold=det.threshold)
            rows.append({"source": name, "detector": det.name, "n_unsafe": len(clean),
                         "n_safe": len(safe.X), "removed_near_duplicates": len(dirty),
                         "auroc": m.auroc, "tpr_at_5fpr": m.tpr_at_5fpr,
                         "recall_at_threshold": m.recall})
    return rows


def _formatting(sp: SafetyPolytope) -> Any:
    from ..features import Formatting

    fmt = sp.context.formatting or {}
    return Formatting(**fmt) if isinstance(fmt, dict) else fmt


def leave_one_source_out(res: FitResult, target_fpr: float, borderline_fpr: float
                         ) -> list[dict[str, Any]]:
    """For each harmful training source S: fit without S (same hyper-parameters), calibrate on
    validation without S, and score S's rows (all splits) against the test split's safe rows."""
    rows = []
    params = {k: v for k, v in res.polytope.get_params().items() if v is not None}
    everything = _concat([res.train, res.validation, res.test])
    safe_test = res.test.subset(res.test.y == 0)
    harmful_sources = sorted({r.source for r, y in zip(res.train.records, res.train.y) if y == 1})
    for src in harmful_sources:
        keep_tr = res.train.subset([r.source != src for r in res.train.records])
        keep_va = res.validation.subset([r.source != src for r in res.validation.records])
        if len(set(keep_tr.y.tolist())) < 2:
            continue
        sp = SafetyPolytope(**params).fit(keep_tr.X, keep_tr.y, validation=(keep_va.X, keep_va.y))
        f = (lambda model: (lambda X: _np(model.decision_function(X))))(sp)
        thr = calibrated_threshold(f, *keep_va.calibration_sets(), target_fpr, borderline_fpr)
        held = everything.subset([r.source == src and int(y) == 1
                                  for r, y in zip(everything.records, everything.y)])
        X = torch.cat([held.X, safe_test.X])
        y = np.r_[np.ones(len(held.X)), np.zeros(len(safe_test.X))]
        m = detection_metrics(y, f(X), threshold=thr)
        rows.append({"held_out_source": src, "n_unsafe": len(held.X), "n_safe": len(safe_test.X),
                     "auroc": m.auroc, "tpr_at_5fpr": m.tpr_at_5fpr,
                     "recall_at_threshold": m.recall, "fpr_at_threshold": m.fpr})
    return rows


def _concat(parts: Sequence[SplitFeatures]) -> SplitFeatures:
    records: list[Record] = [r for p in parts for r in p.records]
    return SplitFeatures(records, torch.cat([p.X for p in parts]),
                         torch.cat([p.y for p in parts]))


def evaluate(res: FitResult, *, baselines: bool = True, unseen: bool = True,
             leave_one_out: bool = True, unseen_limit: int | None = None) -> dict[str, Any]:
    """All detection figures of a fit; also stored in ``res.polytope.metrics_["detection"]``."""
    cal = res.polytope.calibration_ or {}
    target = cal.get("plain_target_fpr", 0.05)
    border = cal.get("borderline_target_fpr", 0.15)
    dets = [polytope_detector(res.polytope)]
    if baselines:
        dets += baseline_detectors(res, target, border)
    out: dict[str, Any] = {"test": {d.name: score_split(d, res.test) for d in dets},
                           "thresholds": {d.name: d.threshold for d in dets}}
    token_level = res.polytope.context.pooling == "tokens"
    if unseen and not token_level:
        out["unseen_sources"] = unseen_source_rows(res, dets, limit=unseen_limit)
    if leave_one_out:
        out["leave_one_source_out"] = leave_one_source_out(res, target, border)
    res.polytope.metrics_["detection"] = out
    return out
