"""Detection metrics: unsafe (1) is the positive class; values checked against scikit-learn and
against numbers worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from safety_polytope.datasets import Record
from safety_polytope.errors import InputError
from safety_polytope.evaluation import (
    DetectionMetrics,
    LogisticProbe,
    cross_source_table,
    detection_metrics,
    format_metrics_table,
    per_group_recall,
    roc_points,
    threshold_for_fpr,
)

# 4 points worked by hand. Sorted by score: 0.9 (unsafe), 0.6 (safe), 0.4 (unsafe), 0.1 (safe).
# ROC vertices: (0, 0), (0, .5), (.5, .5), (.5, 1), (1, 1)  -> AUROC = .5*.5 + .5*1 = 0.75.
# AP = .5 * 1 (recall .5 at precision 1) + .5 * 2/3 (recall 1 at precision 2/3) = 5/6.
# Threshold 0.5 flags 0.9 and 0.6: TP 1, FP 1, FN 1, TN 1.
Y4 = np.array([1, 1, 0, 0])
S4 = np.array([0.9, 0.4, 0.6, 0.1])


def test_hand_example() -> None:
    m = detection_metrics(Y4, S4, threshold=0.5)
    assert (m.n, m.n_unsafe, m.n_safe, m.threshold) == (4, 2, 2, 0.5)
    assert m.accuracy == 0.5 and m.precision == 0.5 and m.recall == 0.5 and m.f1 == 0.5
    assert m.fpr == 0.5
    assert m.auroc == 0.75
    assert m.auprc == pytest.approx(5 / 6, abs=1e-12)
    # 0% FPR allows no safe example above the threshold: only 0.9 can be flagged.
    assert m.tpr_at_1fpr == 0.5 and m.tpr_at_5fpr == 0.5


def test_hand_example_threshold_is_strict() -> None:
    m = detection_metrics(Y4, S4, threshold=0.6)  # 0.6 itself is not flagged
    assert (m.recall, m.fpr, m.precision) == (0.5, 0.0, 1.0)


def test_tpr_at_fpr_never_splits_a_tie() -> None:
    # an unsafe and a safe example tie at the top: flagging one flags both (FPR 1/2 > 5%)
    m = detection_metrics([1, 0, 1, 0], [1.0, 1.0, 0.0, -1.0])
    assert m.tpr_at_5fpr == 0.0
    fpr, tpr, thr = roc_points([1, 0, 1, 0], [1.0, 1.0, 0.0, -1.0])
    np.testing.assert_array_equal(fpr, [0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1.0, 1.0])
    assert thr[0] == np.inf


def test_tpr_at_fpr_by_hand_with_many_safe() -> None:
    # 100 safe scores 0..99, unsafe scores spread over them: at most 1 (5) safe flagged
    safe = np.arange(100.0)
    unsafe = np.array([99.5, 98.5, 97.5, 96.5, 95.5, 94.5, 50.0, 10.0])
    y = np.r_[np.ones(unsafe.size), np.zeros(safe.size)]
    m = detection_metrics(y, np.r_[unsafe, safe])
    assert m.tpr_at_1fpr == 2 / 8  # above 98: 99.5 and 98.5, one false positive (99)
    assert m.tpr_at_5fpr == 6 / 8  # above 94: six unsafe, five false positives (95..99)


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    scores = y * 0.8 + rng.normal(size=n)
    scores[:40] = np.round(scores[:40], 1)  # some ties
    m = detection_metrics(y, scores, threshold=0.3)
    assert abs(m.auroc - roc_auc_score(y, scores)) < 1e-9
    assert abs(m.auprc - average_precision_score(y, scores)) < 1e-9
    pred = (scores > 0.3).astype(int)
    assert abs(m.precision - precision_score(y, pred)) < 1e-12
    assert abs(m.recall - recall_score(y, pred)) < 1e-12
    assert abs(m.f1 - f1_score(y, pred)) < 1e-12
    assert abs(m.accuracy - accuracy_score(y, pred)) < 1e-12
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    for target, got in ((0.01, m.tpr_at_1fpr), (0.05, m.tpr_at_5fpr)):
        assert got == tpr[fpr <= target].max()


def test_unsafe_is_positive_and_flipping_scores_flips_auroc() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(size=200)
    m, flipped = detection_metrics(y, s), detection_metrics(y, -s)
    assert m.auroc > 0.7  # higher scores on unsafe rank as good, not bad
    assert flipped.auroc == pytest.approx(1 - m.auroc, abs=1e-12)
    # AUPRC is of the unsafe class: different from AUPRC of safe-as-positive
    assert m.auprc == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m.auprc != pytest.approx(average_precision_score(1 - y, -s), abs=1e-3)


def test_torch_and_list_inputs() -> None:
    m = detection_metrics(torch.tensor(Y4), torch.tensor(S4, dtype=torch.bfloat16), 0.5)
    assert m.auroc == 0.75
    assert detection_metrics(Y4.tolist(), S4.tolist(), 0.5) == detection_metrics(Y4, S4, 0.5)
    assert detection_metrics(Y4.astype(bool), S4, 0.5).auroc == 0.75


def test_single_class_gives_nan_not_a_number() -> None:
    only_unsafe = detection_metrics([1, 1, 1], [0.5, -1.0, 2.0])
    for name in ("auroc", "auprc", "tpr_at_1fpr", "tpr_at_5fpr", "fpr"):
        assert math.isnan(getattr(only_unsafe, name)), name
    assert only_unsafe.recall == 2 / 3 and only_unsafe.precision == 1.0
    only_safe = detection_metrics([0, 0], [-1.0, 1.0])
    for name in ("auroc", "auprc", "recall", "tpr_at_5fpr"):
        assert math.isnan(getattr(only_safe, name)), name
    assert only_safe.fpr == 0.5 and only_safe.f1 == 0.0
    nothing_flagged = detection_metrics([1, 0], [-1.0, -2.0])
    assert math.isnan(nothing_flagged.precision) and nothing_flagged.f1 == 0.0
    assert math.isnan(detection_metrics([0, 0], [-1.0, -2.0]).f1)


def test_constant_scores_rank_nothing_and_warn(caplog: pytest.LogCaptureFixture) -> None:
    m = detection_metrics([1, 0, 1, 0, 0], np.zeros(5))
    assert m.auroc == 0.5 and m.auprc == pytest.approx(0.4) and m.tpr_at_5fpr == 0.0
    assert "scores equal" in caplog.text


def test_to_dict_is_json_safe() -> None:
    d = detection_metrics([1, 1], [0.5, 2.0]).to_dict()
    assert d["auroc"] is None and d["recall"] == 1.0 and d["n"] == 2
    json.dumps(d, allow_nan=False)
    assert list(d) == [f for f in DetectionMetrics.__dataclass_fields__]


@pytest.mark.parametrize(("y", "s", "match"), [
    ([1, 0, 1], [0.1, 0.2], r"y_true has 3, scores has 2"),
    ([1, 0], [0.1, float("nan")], r"scores has 1 NaN value\(s\) \(rows 1\)"),
    ([1, 2], [0.1, 0.2], r"values other than 0 and 1 \(2\) at rows 1"),
    ([1, -1], [0.1, 0.2], r"must be 1 \(unsafe\) or 0 \(safe\)"),
    ([0.5, 1], [0.1, 0.2], r"values other than 0 and 1 \(0.5\)"),
    ([], [], r"y_true is empty"),
    ([1, 0], [[0.1], [0.2]], r"scores must be 1-D .* got shape \(2, 1\)"),
])
def test_detection_metrics_errors(y: list, s: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        detection_metrics(y, s)


def test_detection_metrics_threshold_errors() -> None:
    with pytest.raises(InputError, match="threshold must be a finite number; got nan"):
        detection_metrics(Y4, S4, threshold=float("nan"))


def test_infinite_scores_rank() -> None:
    m = detection_metrics([1, 1, 0, 0], [np.inf, np.inf, -np.inf, 0.0])
    assert m.auroc == 1.0 and m.tpr_at_1fpr == 1.0


# --------------------------------------------------------------------------- threshold_for_fpr


def test_threshold_for_fpr_by_hand() -> None:
    safe = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert threshold_for_fpr(safe, 0.0) == 9.0  # nothing above the largest
    assert threshold_for_fpr(safe, 0.1) == 8.0  # one (9) above
    assert threshold_for_fpr(safe, 0.15) == 8.0  # still one: 2 would be 20%
    assert threshold_for_fpr(safe, 0.29) == 7.0  # 0.29 * 10 rounds to 2.8999...: k = 2
    assert threshold_for_fpr([1.0, 1.0, 1.0, 0.0], 0.5) == 1.0  # ties: 0% realised, not 75%
    assert threshold_for_fpr(torch.tensor([3.0, 1.0]), 0.5) == 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-20, 20), min_size=1, max_size=60),
       st.floats(0.0, 1.0, exclude_max=True))
def test_threshold_for_fpr_meets_target_and_is_smallest(scores: list[int], target: float) -> None:
    s = np.array(scores, dtype=np.float64)
    t = threshold_for_fpr(s, target)
    assert np.mean(s > t) <= target
    # the smallest such threshold: anything lower flags too many
    assert np.mean(s > np.nextafter(t, -np.inf)) > target
    assert detection_metrics(np.zeros(s.size), s, threshold=t).fpr <= target


@pytest.mark.parametrize(("scores", "target", "match"), [
    ([], 0.1, "scores_safe is empty"),
    ([0.1, float("nan")], 0.1, "scores_safe has 1 NaN"),
    ([0.1], 1.0, r"target_fpr must be a number in \[0.0, 1.0\); got 1.0"),
    ([0.1], -0.1, r"target_fpr must be a number in \[0.0, 1.0\); got -0.1"),
    ([0.1], "0.1", r"target_fpr must be a number"),
])
def test_threshold_for_fpr_errors(scores: list, target: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        threshold_for_fpr(scores, target)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- per_group_recall


def test_per_group_recall_by_hand() -> None:
    y = [1, 1, 1, 0, 0, 0, 1, 0]
    pred = [1, 0, 1, 1, 0, 0, 0, 1]
    groups = ["weapons", "weapons", "drugs", "benign", "benign", "benign", "drugs", "mixed"]
    out = per_group_recall(y, pred, groups)
    assert list(out) == ["weapons", "drugs", "benign", "mixed"]
    assert out["weapons"] == {"n": 2, "n_unsafe": 2, "n_safe": 0, "recall": 0.5,
                              "flag_rate": pytest.approx(float("nan"), nan_ok=True)}
    assert out["drugs"]["recall"] == 0.5 and out["drugs"]["n_unsafe"] == 2
    assert math.isnan(out["benign"]["recall"]) and out["benign"]["flag_rate"] == 1 / 3
    assert out["benign"]["n_safe"] == 3
    assert out["mixed"]["flag_rate"] == 1.0


def test_per_group_recall_errors() -> None:
    with pytest.raises(InputError, match="groups has 1"):
        per_group_recall([1, 0], [1, 0], ["a"])
    with pytest.raises(InputError, match=r"y_pred holds values other than 0 and 1 .*threshold "
                                          r"scores first"):
        per_group_recall([1, 0], [0.7, 0.2], ["a", "b"])


# --------------------------------------------------------------------------- cross-source


def _synthetic_sources(seed: int = 0) -> tuple[list[Record], np.ndarray, np.ndarray]:
    """Safe examples around the origin. Unsafe sources "a1" and "a2" lie along e0, "b" along e1:
    a model trained on a1 transfers to a2 and not to b. Returns records, features and a held-out
    safe set."""
    rng = np.random.default_rng(seed)
    d, n = 6, 60
    parts: list[tuple[str, int, np.ndarray]] = [
        ("safe_train", 0, rng.normal(size=(n, d))),
        ("a1", 1, rng.normal(size=(n, d)) + 4 * np.eye(d)[0]),
        ("a2", 1, rng.normal(size=(n, d)) + 4 * np.eye(d)[0]),
        ("b", 1, rng.normal(size=(n, d)) + 4 * np.eye(d)[1]),
        ("mixed", 1, rng.normal(size=(n, d)) + 4 * np.eye(d)[0]),
        ("mixed", 0, rng.normal(size=(n, d))),
    ]
    records, feats = [], []
    for source, label, X in parts:
        for i, x in enumerate(X):
            records.append(Record(id=f"{source}-{label}-{i}", prompt="p", label=label,
                                  category="benign" if label == 0 else "violence",
                                  source=source))
            feats.append(x)
    return records, np.array(feats), rng.normal(size=(80, d))


def _mean_diff_fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return X[y == 1].mean(0) - X[y == 0].mean(0)


def test_cross_source_table_trains_only_on_train_sources() -> None:
    records, X, heldout = _synthetic_sources()
    seen: list[int] = []

    def fit(Xtr: np.ndarray, ytr: np.ndarray) -> np.ndarray:
        seen.append(Xtr.shape[0])
        assert Xtr.dtype == np.float32 and set(ytr.tolist()) == {0, 1}
        return _mean_diff_fit(Xtr, ytr)

    rows = cross_source_table(records, torch.from_numpy(X), fit, lambda w, Z: Z @ w,
                              [(["a1", "safe_train"], "a2"), ({"a1", "safe_train"}, ["b"]),
                               (("a1", "safe_train"), ("mixed",))],
                              heldout_safe=heldout, threshold=5.0)
    assert seen == [120, 120, 120]
    same, other, mixed = rows
    assert same["train_sources"] == ("a1", "safe_train") and same["test_sources"] == ("a2",)
    assert (same["n_test"], same["n_test_unsafe"], same["n_test_safe"]) == (140, 60, 80)
    assert same["safe_from"] == "heldout_safe" and mixed["safe_from"] == "test_sources"
    assert mixed["n_test"] == 120 and mixed["n_test_safe"] == 60
    assert same["auroc"] > 0.97 and same["tpr_at_5fpr"] > 0.9
    assert other["auroc"] < 0.8  # the direction learnt on a1 misses source b
    assert same["recall_at_threshold"] > other["recall_at_threshold"]
    assert set(same) >= {"train_sources", "test_sources", "n_test", "auroc", "tpr_at_5fpr",
                         "recall_at_threshold"}


def test_cross_source_table_with_a_baseline() -> None:
    records, X, heldout = _synthetic_sources(1)
    rows = cross_source_table(records, X, lambda X, y: LogisticProbe(C=1.0).fit(X, y),
                              lambda m, X: m.decision_function(X), [(["a1", "safe_train"], "a2")],
                              heldout_safe=heldout)
    assert rows[0]["auroc"] > 0.97


@pytest.mark.parametrize(("groups", "kwargs", "match"), [
    ([(["a1", "safe_train"], ["a1"])], {}, r"sources \['a1'\] are in both train and test"),
    ([(["nope", "safe_train"], ["a2"])], {}, r"unknown source\(s\) \['nope'\]; the records hold"),
    ([(["a1"], ["a2"])], {}, r"training sources \['a1'\] hold only unsafe examples"),
    ([(["a1", "safe_train"], ["a2"])], {}, r"hold only unsafe examples; pass heldout_safe="),
    ([(["a1", "a2"], ["b"])], {}, r"training sources \['a1', 'a2'\] hold only unsafe"),
    ([(["a1", "safe_train"], [])], {}, "test_sources is empty"),
    ([(["a1", "safe_train"], ["a2"])], {"heldout_safe": np.zeros((3, 2))},
     r"heldout_safe must be \(m >= 1, 6\)"),
])
def test_cross_source_table_errors(groups: list, kwargs: dict, match: str) -> None:
    records, X, _ = _synthetic_sources()
    with pytest.raises(InputError, match=match):
        cross_source_table(records, X, _mean_diff_fit, lambda w, Z: Z @ w, groups, **kwargs)


def test_cross_source_table_refuses_leaked_heldout_and_misaligned_features() -> None:
    records, X, _ = _synthetic_sources()
    leaked = X[:5]  # rows of safe_train, which is in training
    with pytest.raises(InputError, match=r"heldout_safe rows 0, 1, 2, 3, 4 equal training rows"):
        cross_source_table(records, X, _mean_diff_fit, lambda w, Z: Z @ w,
                           [(["a1", "safe_train"], ["a2"])], heldout_safe=leaked)
    with pytest.raises(InputError, match=r"features has 359 rows but records has 360"):
        cross_source_table(records, X[:-1], _mean_diff_fit, lambda w, Z: Z @ w,
                           [(["a1", "safe_train"], ["mixed"])])


def test_cross_source_table_test_set_without_unsafe() -> None:
    records, X, _ = _synthetic_sources()
    with pytest.raises(InputError, match=r"test sources \['safe_train'\] hold no unsafe"):
        cross_source_table(records, X, _mean_diff_fit, lambda w, Z: Z @ w,
                           [(["a1", "mixed"], ["safe_train"])])


# --------------------------------------------------------------------------- table


def test_format_metrics_table() -> None:
    good = detection_metrics(Y4, S4, 0.5)
    undefined = detection_metrics([1, 1], [0.2, 0.3])
    table = format_metrics_table({"polytope": good, "probe": undefined})
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    assert "polytope" in text and "probe" in text and "AUROC" in text and "TPR@5%FPR" in text
    assert "0.750" in text and "0.833" in text and "n/a" in text
    assert table.row_count == 2
