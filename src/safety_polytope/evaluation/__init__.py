"""Evaluation: detection metrics (unsafe = positive class, always) and baseline detectors run in
the same harness as the polytope.

>>> from safety_polytope.evaluation import detection_metrics, LogisticProbe  # doctest: +SKIP
>>> m = detection_metrics(y_test, polytope.decision_function(X_test))  # doctest: +SKIP
"""

from .baselines import LogisticProbe, MLPDetector
from .metrics import (
    DetectionMetrics,
    cross_source_table,
    detection_metrics,
    format_metrics_table,
    per_group_recall,
    roc_points,
    threshold_for_fpr,
)

__all__ = [
    "DetectionMetrics", "LogisticProbe", "MLPDetector", "cross_source_table",
    "detection_metrics", "format_metrics_table", "per_group_recall", "roc_points",
    "threshold_for_fpr",
]
