"""Baseline detectors: separate a separable set, are deterministic for a seed, follow the
scikit-learn estimator conventions, and refuse bad input with the documented messages."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from safety_polytope.errors import InputError
from safety_polytope.evaluation import LogisticProbe, MLPDetector, detection_metrics


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The models here are tiny: extra torch/BLAS threads only add synchronisation, which costs
    10-100x on a loaded machine (measured: lbfgs 0.17 s vs 1.7 s). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


FAST_MLP = {"hidden_size": 32, "max_epochs": 60, "patience": 5, "batch_size": 32}


def _separable(n: int = 300, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes on either side of a random hyperplane, with a margin, plus one feature of
    huge magnitude that carries no signal (as hidden states have)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    margin = X @ w
    keep = np.abs(margin) > 0.5
    X, y = X[keep], (margin[keep] > 0).astype(np.int64)
    X[:, 0] = X[:, 0] * 300 + 1000
    return X.astype(np.float32), y


DETECTORS = [
    pytest.param(lambda: LogisticProbe(), id="logistic-cv"),
    pytest.param(lambda: LogisticProbe(C=0.5), id="logistic-fixed"),
    pytest.param(lambda: MLPDetector(**FAST_MLP), id="mlp"),
]


@pytest.mark.parametrize("make", DETECTORS)
def test_separates_a_linearly_separable_set(make) -> None:
    X_all, y_all = _separable(n=600, seed=2)  # train on the first 400, test on the rest
    det = make()
    assert det.fit(X_all[:400], y_all[:400]) is det
    scores = det.decision_function(X_all[400:])
    assert scores.shape == (X_all.shape[0] - 400,) and scores.dtype == np.float64
    assert detection_metrics(y_all[400:], scores).auroc >= 0.95
    pred = det.predict(X_all[400:])
    assert pred.dtype == np.int64 and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (scores > 0).astype(np.int64))


@pytest.mark.parametrize("make", DETECTORS)
def test_deterministic_for_a_seed(make) -> None:
    X, y = _separable(seed=3)
    a = make().fit(X, y).decision_function(X)
    b = make().fit(torch.from_numpy(X), torch.from_numpy(y)).decision_function(X)
    np.testing.assert_array_equal(a, b)


def test_mlp_seed_changes_the_fit_and_global_rng_is_untouched() -> None:
    X, y = _separable(seed=4)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = MLPDetector(**FAST_MLP, seed=0).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), before)
    b = MLPDetector(**FAST_MLP, seed=1).fit(X, y)
    assert not np.array_equal(a.decision_function(X), b.decision_function(X))


def test_mlp_early_stopping_keeps_the_best_epoch() -> None:
    X, y = _separable(seed=5)
    det = MLPDetector(**{**FAST_MLP, "max_epochs": 300, "patience": 3}).fit(X, y)
    assert det.n_epochs_ == len(det.history_) < 300
    assert det.n_epochs_ - det.best_epoch_ == 3
    val = [h["val_loss"] for h in det.history_]
    assert min(val) == val[det.best_epoch_ - 1]
    layer = det.net_[0]
    assert layer.in_features == 16 and layer.out_features == 32
    assert layer.weight.dtype == torch.float32


def test_mlp_without_validation_trains_all_epochs(caplog: pytest.LogCaptureFixture) -> None:
    X, y = _separable(seed=6)
    det = MLPDetector(**{**FAST_MLP, "max_epochs": 7, "validation_fraction": 0.0}).fit(X, y)
    assert det.n_epochs_ == det.best_epoch_ == 7 and "val_loss" not in det.history_[0]
    assert "without early stopping" in caplog.text


def test_logistic_cv_picks_from_the_grid() -> None:
    X, y = _separable(seed=7)
    probe = LogisticProbe(Cs=[10.0, 0.01, 1.0], cv=3).fit(X, y)
    assert set(probe.cv_auroc_) == {0.01, 1.0, 10.0}
    assert probe.C_ in probe.cv_auroc_
    assert probe.cv_auroc_[probe.C_] == max(probe.cv_auroc_.values())
    assert LogisticProbe(C=2.0).fit(X, y).cv_auroc_ == {}


def test_logistic_tiny_rare_class_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    X, y = _separable(seed=8)
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:1]]
    probe = LogisticProbe().fit(X[keep], y[keep])
    assert probe.C_ == 1.0 and "too few to cross-validate" in caplog.text


@pytest.mark.parametrize("make", DETECTORS)
def test_get_params_rebuilds_an_unfitted_equal(make) -> None:
    det = make()
    rebuilt = type(det)(**det.get_params())
    assert rebuilt.get_params() == det.get_params()
    X, y = _separable(seed=9)
    det.fit(X, y)
    for copy in (type(det)(**det.get_params()), clone(det)):
        assert copy.get_params() == det.get_params()
        assert not hasattr(copy, "n_features_in_")
    assert repr(det).startswith(type(det).__name__ + "(")


def test_set_params() -> None:
    probe = LogisticProbe().set_params(C=3.0)
    assert probe.C == 3.0
    with pytest.raises(InputError, match="LogisticProbe has no parameter 'c'; its parameters "
                                         "are C, Cs, cv"):
        probe.set_params(c=1.0)


@pytest.mark.parametrize("cls", [LogisticProbe, MLPDetector])
def test_input_errors(cls) -> None:
    name = cls.__name__
    X, y = _separable(seed=10)
    det = cls(**(FAST_MLP if cls is MLPDetector else {"C": 1.0}))
    with pytest.raises(InputError, match=f"This {name} is not fitted yet; call fit"):
        det.decision_function(X)
    bad = X.copy()
    bad[[2, 5]] = np.nan
    with pytest.raises(InputError, match=r"X has NaN or inf values in 2 row\(s\) \(2, 5\)"):
        det.fit(bad, y)
    bad[[2, 5]] = np.inf
    with pytest.raises(InputError, match=r"NaN or inf values"):
        det.fit(bad, y)
    with pytest.raises(InputError, match=f"y holds only unsafe \\(1\\) examples; {name} needs "
                                         "both"):
        det.fit(X, np.ones_like(y))
    with pytest.raises(InputError, match="y holds only safe"):
        det.fit(X, np.zeros_like(y))
    with pytest.raises(InputError, match=r"y holds values other than 0 and 1 \(2\)"):
        det.fit(X, np.where(y == 1, 2, 0))
    with pytest.raises(InputError, match=f"X has {len(X)} rows but y has 3 labels"):
        det.fit(X, y[:3])
    with pytest.raises(InputError, match=r"X must be a 2-D .* For one example, use "
                                         r"X.reshape\(1, -1\)"):
        det.fit(X[0], y)
    det.fit(X, y)
    with pytest.raises(InputError, match=f"X has 15 columns, but this {name} was fitted on 16; "
                                         "pass features from the same model, layer"):
        det.predict(X[:, :15])
    with pytest.raises(InputError, match="NaN or inf"):
        det.decision_function(bad)


@pytest.mark.parametrize(("cls", "params", "match"), [
    (LogisticProbe, {"C": 0.0}, (r"The 'C' parameter of LogisticProbe must be None \(choose "
                                 r"by cross-validation\) or a float > 0. Got 0.0 instead.")),
    (LogisticProbe, {"Cs": []}, r"'Cs' parameter of LogisticProbe must be a non-empty"),
    (LogisticProbe, {"cv": 1}, r"'cv' parameter of LogisticProbe must be an int >= 2. Got 1"),
    (MLPDetector, {"hidden_size": 0}, r"'hidden_size' parameter of MLPDetector must be an int"),
    (MLPDetector, {"validation_fraction": 1.0}, r"must be a float in \[0, 1\)"),
    (MLPDetector, {"lr": -1.0}, r"'lr' parameter of MLPDetector must be a float > 0"),
    (MLPDetector, {"seed": True}, r"'seed' parameter of MLPDetector must be an int >= 0"),
    (MLPDetector, {"device": "gpu9"}, r"'device' parameter of MLPDetector must be a torch"),
])
def test_parameter_errors(cls, params: dict, match: str) -> None:
    X, y = _separable(n=60, seed=11)
    with pytest.raises(InputError, match=match):
        cls(**params).fit(X, y)
