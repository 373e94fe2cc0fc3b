"""SafetyPolytope: the loss and reassignment by hand, training on known polytopes, calibration,
determinism, parameters, and every bad-input message. Labels: 1 = unsafe, 0 = safe."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from safety_polytope.errors import InputError
from safety_polytope.polytope import (
    CONSTRAINTS,
    PRESETS,
    NotFittedError,
    SafetyPolytope,
    _train,
    assignment_entropy,
    auroc,
    get_encoder,
    polytope_loss,
    reassign_by_entropy,
)
from safety_polytope.polytope.presets import PARAM_NAMES


def known_polytope(n: int, d: int = 8, n_true: int = 4, seed: int = 0, gap: float = 0.1,
                   spread: float = 1.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(X, y, normals)``: y = 1 (unsafe) outside {x : a_j . x <= 1 for all j}, with
    orthonormal a_j; rows within ``gap`` of the boundary are dropped so the classes separate."""
    g = torch.Generator().manual_seed(seed)
    normals = torch.linalg.qr(torch.randn(d, d, generator=g))[0][:n_true]
    X = torch.randn(3 * n, d, generator=g) * spread
    margin = (X @ normals.T - 1.0).max(1).values
    keep = margin.abs() > gap
    return X[keep][:n], (margin[keep][:n] > 0).long(), normals


def tiny(n: int = 300, seed: int = 0, **params) -> tuple[SafetyPolytope, torch.Tensor,
                                                         torch.Tensor]:
    X, y, _ = known_polytope(n, seed=seed)
    params = {"n_facets": 4, "encoder": "identity", "epochs": 3, **params}
    return SafetyPolytope(**params).fit(X, y), X, y


# --------------------------------------------------------------------------- loss by hand


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_equals_the_formula_by_hand(reduction):
    v = torch.tensor([[-0.5, 0.2], [0.3, -2.0], [1.5, 0.4]])
    f = torch.tensor([[1.0, 0.0, -2.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    phi = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.0, -2.0]])
    y = torch.tensor([0, 1, 1])  # row 0 safe, rows 1-2 unsafe
    assign = torch.tensor([1, 1, 0])  # row 1 on facet 1 (not its argmax); row 0 is safe: unused
    m, wu, lf, lp = 1.0, 2.0, 0.1, 0.01
    safe = max(0, m + -0.5) + max(0, m + 0.2)  # 0.5 + 1.2
    unsafe = wu * max(0, m - -2.0) + wu * max(0, m - 1.5)  # 6 + 0
    hinge = safe + unsafe if reduction == "sum" else (safe + unsafe) / 3
    l1_f = (3.0 + 3.0 + 3.0) / 3
    l1_phi = (2.0 + 2.5) / 2
    expected = hinge + lf * l1_f + lp * l1_phi
    got = polytope_loss(v, f, phi, y, assign, m, wu, lf, lp, reduction)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_loss_rejects_unknown_reduction():
    v = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="reduction"):
        polytope_loss(v, v, v, torch.tensor([0, 1]), torch.tensor([0, 0]), 1, 1, 0, 0, "max")


# --------------------------------------------------------------------------- reassignment


def test_reassignment_spreads_unsafe_rows_that_all_start_on_one_facet():
    K = 4
    v = torch.ones(10, K)
    v[:, 0] = 5.0  # every row's argmax is facet 0 and every row violates every facet
    y = torch.tensor([1] * 8 + [0] * 2)
    before = assignment_entropy(v.argmax(1), y, K)
    assign = reassign_by_entropy(v, y, K, torch.Generator().manual_seed(0))
    after = assignment_entropy(assign, y, K)
    assert before == 0.0
    assert after >= 0.5 * math.log2(K)
    assert torch.equal(assign[8:], v.argmax(1)[8:])  # safe rows keep their argmax
    assert assign.dtype == torch.int64


def test_reassignment_never_lowers_the_entropy_and_is_reproducible():
    g = torch.Generator().manual_seed(1)
    for trial in range(50):
        K = int(torch.randint(2, 9, (1,), generator=g))
        v = torch.randn(32, K, generator=g) + torch.linspace(0, 3, K)  # skewed to the last
        y = (torch.rand(32, generator=g) < 0.5).long()
        before = assignment_entropy(v.argmax(1), y, K)
        a1 = reassign_by_entropy(v, y, K, torch.Generator().manual_seed(trial))
        a2 = reassign_by_entropy(v, y, K, torch.Generator().manual_seed(trial))
        assert torch.equal(a1, a2)
        assert assignment_entropy(a1, y, K) >= before - 1e-12


def test_reassignment_moves_to_a_violated_facet_or_the_second_highest():
    K = 3
    # row 0 violates facets 0 and 2 only; row 1 violates nothing but ranks facet 1 second
    v = torch.tensor([[3.0, -1.0, 0.5], [-0.1, -0.2, -5.0], [2.0, -3.0, -3.0]])
    y = torch.ones(3)
    for seed in range(20):
        a = reassign_by_entropy(v, y, K, torch.Generator().manual_seed(seed))
        assert int(a[0]) in (0, 2)
        assert int(a[1]) in (0, 1)


def test_reassignment_leaves_impossible_or_trivial_batches_alone():
    v = torch.randn(5, 4)
    one_unsafe = torch.tensor([0, 0, 1, 0, 0])
    a = reassign_by_entropy(v, one_unsafe, 4, torch.Generator().manual_seed(0))
    assert torch.equal(a, v.argmax(1))
    no_unsafe = torch.zeros(5)
    assert torch.equal(reassign_by_entropy(v, no_unsafe, 4, torch.Generator()), v.argmax(1))
    assert torch.equal(reassign_by_entropy(v[:, :1], one_unsafe, 1, torch.Generator()),
                       torch.zeros(5, dtype=torch.int64))


# --------------------------------------------------------------------------- gradients


def test_gradients_reach_every_parameter():
    g = torch.Generator().manual_seed(0)
    encoder = get_encoder("relu")
    params = {k: t.requires_grad_(True) for k, t in encoder.init(8, 32, g).items()}
    phi0, xi0 = _train.init_facets(4, 32, "scaled", g)
    phi, xi = phi0.requires_grad_(True), xi0.requires_grad_(True)
    z = torch.randn(16, 8, generator=g)
    y = torch.tensor([0, 1] * 8)
    v, f = _train.violations(encoder, params, phi, xi, z)
    loss = polytope_loss(v, f, phi, y, reassign_by_entropy(v, y, 4, g), 1.0, 2.0, 1e-3, 1e-4)
    loss.backward()
    for name, t in {**params, "phi": phi, "xi": xi}.items():
        assert t.grad is not None and t.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_identity_polytope_recovers_the_generating_half_spaces(preset):
    linear_sum_assignment = pytest.importorskip("scipy.optimize").linear_sum_assignment
    X, y, normals = known_polytope(5000)
    sp = SafetyPolytope(preset=preset, n_facets=4, encoder="identity").fit(X[:4000], y[:4000])
    acc = (sp.predict(X[4000:]) == y[4000:]).float().mean().item()
    assert acc >= 0.99
    learned = torch.nn.functional.normalize(sp.folded().facets, dim=1)
    cos = (normals @ learned.T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    assert cos[rows, cols].min() >= 0.9, cos[rows, cols]


def test_relu_polytope_classifies_a_known_polytope():
    X, y, _ = known_polytope(5000)
    sp = SafetyPolytope(n_facets=4, encoder="relu", n_features=128,
                        epochs=30).fit(X[:4000], y[:4000])
    assert (sp.predict(X[4000:]) == y[4000:]).float().mean().item() >= 0.99
    assert auroc(sp.decision_function(X[4000:]), y[4000:]) >= 0.99


def test_scores_predictions_and_folded_form_agree():
    for encoder in ("identity", "relu"):
        sp, X, _ = tiny(encoder=encoder, n_features=None if encoder == "identity" else 16)
        v = sp.violations(X)
        assert v.shape == (X.shape[0], 4) and v.dtype == torch.float32
        assert torch.equal(sp.decision_function(X), v.max(1).values)
        assert torch.equal(sp.predict(X), (v.max(1).values > 0).long())
        assert torch.equal(sp.predict_facets(X), v > 0)
        assert sp.features(X).shape == (X.shape[0], sp.n_features_)
        torch.testing.assert_close(sp.folded().violations(X), v, atol=1e-4, rtol=1e-4)
        # numpy in, same numbers out
        assert torch.equal(sp.violations(X.numpy()), v)
        assert torch.equal(sp.violations(X.double().numpy()), v)


def test_standardisation_is_learned_and_inverts():
    from safety_polytope.polytope.encoders import standardize, unstandardize

    X, y, _ = known_polytope(300)
    X = X * 7.0 + 3.0
    sp = SafetyPolytope(n_facets=4, encoder="identity", epochs=2).fit(X, y)
    torch.testing.assert_close(sp.mean_, X.mean(0))
    torch.testing.assert_close(sp.scale_, X.std(0, unbiased=False))
    torch.testing.assert_close(unstandardize(standardize(X, sp.mean_, sp.scale_), sp.mean_,
                                             sp.scale_), X)
    off = SafetyPolytope(n_facets=4, encoder="identity", epochs=2, standardize=False).fit(X, y)
    assert torch.equal(off.mean_, torch.zeros(8)) and torch.equal(off.scale_, torch.ones(8))


def test_validation_early_stopping_and_history():
    X, y, _ = known_polytope(1200)
    sp = SafetyPolytope(n_facets=4, encoder="identity", epochs=40, early_stopping=2,
                        lr=0.3).fit(X[:800], y[:800], validation=(X[800:], y[800:]))
    h = sp.history_
    assert {"epoch", "loss", "assignment_entropy", "val_loss", "val_auroc"} <= set(h[0])
    best = min(range(len(h)), key=lambda i: h[i]["val_loss"])
    assert sp.training_summary_["best_epoch"] == h[best]["epoch"]
    assert sp.training_summary_["stopped_early"] and len(h) - h[best]["epoch"] == 2
    # the kept parameters are the best epoch's, not the last one's
    z = (X[800:] - sp.mean_) / sp.scale_
    val_loss, _ = _train.evaluate(get_encoder("identity"), sp.encoder_, sp.facets_,
                                  sp.offsets_, z, y[800:].float(), sp.params_)
    assert val_loss == pytest.approx(h[best]["val_loss"], rel=1e-5)


def test_without_validation_every_epoch_runs():
    X, y, _ = known_polytope(300)
    sp = SafetyPolytope(n_facets=4, encoder="identity", epochs=7, early_stopping=1).fit(X, y)
    assert len(sp.history_) == 7 and not sp.training_summary_["stopped_early"]
    assert "val_loss" not in sp.history_[0]


def test_categories_are_summarised_per_facet():
    X, y, _ = known_polytope(400)
    cats = ["violence" if i % 2 else "fraud" for i in range(len(y))]
    sp = SafetyPolytope(n_facets=4, encoder="identity", epochs=2).fit(X, y, categories=cats)
    summary = sp.training_summary_["categories"]
    assert set(summary) == {"fraud", "violence"}
    assert sum(c["unsafe"] for c in summary.values()) == int(y.sum())
    assert sum(sum(c.values()) for c in sp.facet_categories_) == int(y.sum())


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("per_facet", [False, True])
@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2])
def test_calibration_meets_the_target_fpr(per_facet, target):
    sp, _, _ = tiny()
    X_safe = torch.randn(500, 8, generator=torch.Generator().manual_seed(5)) * 1.5
    sp.calibrate(X_safe, target_fpr=target, per_facet=per_facet)
    flagged = int(sp.predict(X_safe).sum())
    assert flagged <= math.floor(target * 500 + 1e-9)
    assert flagged >= target * 500 - 10  # uses the budget, not a needlessly high threshold
    assert sp.calibration_["fpr"] == pytest.approx(flagged / 500)
    if per_facet:
        assert sp.threshold_ is None
        assert torch.equal(sp.predict_facets(X_safe), sp.violations(X_safe)
                           > sp.facet_thresholds_)
    else:
        assert torch.equal(sp.predict(X_safe),
                           (sp.decision_function(X_safe) > sp.threshold_).long())


def test_calibration_handles_ties():
    sp, _, _ = tiny()
    X_safe = torch.zeros(100, 8)  # 100 identical rows: all tie
    sp.calibrate(X_safe, target_fpr=0.5)
    assert sp.predict(X_safe).sum() == 0


# --------------------------------------------------------------------------- determinism


def _state(sp: SafetyPolytope) -> dict[str, torch.Tensor]:
    return {**{f"enc.{k}": t for k, t in sp.encoder_.items()}, "facets": sp.facets_,
            "offsets": sp.offsets_, "mean": sp.mean_, "scale": sp.scale_}


def test_same_seed_same_tensors_different_seed_different():
    X, y, _ = known_polytope(300)
    kw = {"n_facets": 4, "encoder": "relu", "n_features": 16, "epochs": 2, "batch_size": 32}
    a = _state(SafetyPolytope(seed=3, **kw).fit(X, y))
    b = _state(SafetyPolytope(seed=3, **kw).fit(X, y))
    c = _state(SafetyPolytope(seed=4, **kw).fit(X, y))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["facets"], c["facets"])
    torch.manual_seed(123)  # the global RNG plays no part
    d = _state(SafetyPolytope(seed=3, **kw).fit(X, y))
    assert all(torch.equal(a[k], d[k]) for k in a)


# --------------------------------------------------------------------------- parameters


def test_clone_from_get_params_gives_an_equal_unfitted_estimator():
    sp, _, _ = tiny(margin=2.5, preset="paper")
    clone = SafetyPolytope(**sp.get_params())
    assert clone.get_params() == sp.get_params()
    assert clone.resolved_params() == sp.params_
    assert not hasattr(clone, "facets_")
    with pytest.raises(NotFittedError):
        clone.predict(torch.zeros(1, 8))
    assert repr(clone) == repr(sp)


def test_presets_fill_unset_parameters_and_explicit_values_win():
    assert SafetyPolytope().resolved_params()["reduction"] == PRESETS["default"]["reduction"]
    paper = SafetyPolytope.from_preset("paper", n_facets=30).resolved_params()
    assert paper == {**PRESETS["paper"], "n_facets": 30, "preset": "paper"}
    assert paper["reduction"] == "sum" and paper["batch_size"] == 32 and paper["lr"] == 1e-2
    sp = SafetyPolytope().set_params(epochs=7)
    assert sp.epochs == 7 and sp.resolved_params()["epochs"] == 7
    assert set(CONSTRAINTS) == {*PARAM_NAMES, "preset"}
    assert all(set(row) == set(PARAM_NAMES) for row in PRESETS.values())


def test_sklearn_clone_works():
    sklearn_base = pytest.importorskip("sklearn.base")
    sp = SafetyPolytope(n_facets=3, encoder="identity")
    assert sklearn_base.clone(sp).get_params() == sp.get_params()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name, value, expected", [
    ("n_facets", 0, "an int >= 1"),
    ("n_facets", 2.5, "an int >= 1"),
    ("n_facets", True, "an int >= 1"),
    ("encoder", "mlp", "one of 'identity', 'relu'"),
    ("n_features", -3, "an int >= 1 or 'auto'"),
    ("margin", 0.0, "a float > 0"),
    ("margin", float("nan"), "a float > 0"),
    ("unsafe_weight", -1, "a float > 0"),
    ("l1_features", -0.1, "a float >= 0"),
    ("reduction", "avg", "one of 'sum', 'mean'"),
    ("entropy_reassign", 1, "a bool"),
    ("init", "xavier", "one of 'scaled', 'paper'"),
    ("lr", 0, "a float > 0"),
    ("epochs", 0, "an int >= 1"),
    ("batch_size", "32", "an int >= 1"),
    ("seed", -1, "an int >= 0"),
    ("device", "gpu", "'cpu', 'cuda', 'cuda:N' or 'auto'"),
    ("early_stopping", -1, "an int >= 0"),
    ("preset", "fast", "None or one of 'default', 'paper'"),
])
def test_bad_hyperparameters_are_refused_with_the_template(name, value, expected):
    X, y, _ = known_polytope(100)
    message = (re.escape(f"The '{name}' parameter of SafetyPolytope must be {expected}") + ".*"
               + re.escape(f"Got {value!r} instead."))
    with pytest.raises(InputError, match=message):
        SafetyPolytope(**{name: value}).fit(X, y)


def test_bad_hyperparameter_message_exact():
    with pytest.raises(InputError) as e:
        SafetyPolytope(n_facets=0).resolved_params()
    assert str(e.value) == ("The 'n_facets' parameter of SafetyPolytope must be an int >= 1. "
                            "Got 0 instead.")


def test_unknown_parameter_in_set_params():
    with pytest.raises(InputError, match="no parameter.*n_facet.*valid parameters: n_facets"):
        SafetyPolytope().set_params(n_facet=3)


def test_bad_features_and_labels():
    X, y, _ = known_polytope(100)
    sp = SafetyPolytope(n_facets=2, encoder="identity", epochs=1)
    bad = X.clone()
    bad[[3, 17, 40], 2] = float("nan")
    bad[50, 0] = float("inf")
    with pytest.raises(InputError, match=r"NaN or infinite values in 4 of 100 rows "
                                         r"\(rows 3, 17, 40, 50\)"):
        sp.fit(bad, y)
    with pytest.raises(InputError, match=r"X is empty \(shape \(0, 8\)\)"):
        sp.fit(torch.zeros(0, 8), torch.zeros(0))
    with pytest.raises(InputError, match=r"X must be 2-D.*got shape \(8,\).*reshape\(1, -1\)"):
        sp.fit(X[0], y[:1])
    with pytest.raises(InputError, match="torch.Tensor or numpy array.*got list"):
        sp.fit(X.tolist(), y)
    with pytest.raises(InputError, match="y must be a sequence of 0 .safe. / 1 .unsafe. labels"):
        sp.fit(X, ["safe"] * 100)
    assert sp.fit(X, y.bool().numpy()).n_features_in_ == 8  # bool and numpy labels are fine
    with pytest.raises(InputError, match="X has 100 rows but y has 99 labels"):
        sp.fit(X, y[:99])
    with pytest.raises(InputError, match=r"only 0 \(safe\) and 1 \(unsafe\); got other values "
                                         r"\(-1, 2\) in 2 of 100"):
        sp.fit(X, torch.cat([y[:98], torch.tensor([2, -1])]))
    with pytest.raises(InputError, match=r"y holds only safe \(0\) examples \(100 of them\)"):
        sp.fit(X, torch.zeros(100))
    with pytest.raises(InputError, match=r"y holds only unsafe \(1\) examples"):
        sp.fit(X, np.ones(100))
    few = torch.zeros(100)
    few[:3] = 1
    with pytest.raises(InputError, match="3 unsafe examples but n_facets=4; each facet needs"):
        SafetyPolytope(n_facets=4).fit(X, few)
    with pytest.raises(InputError, match="categories has 2 entries"):
        sp.fit(X, y, categories=["a", "b"])
    with pytest.raises(InputError, match=r"n_features=5 does not apply to encoder='identity'"):
        SafetyPolytope(encoder="identity", n_features=5, n_facets=2).fit(X, y)
    with pytest.raises(InputError, match="X_val has 3 columns, but X has 8"):
        sp.fit(X, y, validation=(torch.zeros(4, 3), torch.zeros(4)))


def test_bad_input_after_fit():
    sp, X, _ = tiny()
    with pytest.raises(InputError, match="features have 960 columns, but this SafetyPolytope "
                                         "was fitted on 8; extract features"):
        sp.predict(torch.zeros(2, 960))
    sp.set_context(model={"name": "smollm2-135m-instruct"}, layer=20, pooling="last")
    with pytest.raises(InputError, match=r"fitted on 8 \(layer 20 of smollm2-135m-instruct, "
                                         r"pooling 'last'\)"):
        sp.decision_function(np.zeros((2, 960)))
    with pytest.raises(InputError, match=r"NaN or infinite values in 1 of 2 rows"):
        sp.violations(torch.tensor([[float("nan")] * 8, [0.0] * 8]))
    with pytest.raises(InputError, match=r"'target_fpr' parameter of SafetyPolytope.calibrate "
                                         r"must be a float in \[0, 1\). Got 1.5 instead."):
        sp.calibrate(X, target_fpr=1.5)
    with pytest.raises(InputError, match="facet names must be 4 non-empty strings"):
        sp.set_facet_names(["a"])
    with pytest.raises(InputError, match="repeated: a"):
        sp.set_facet_names(["a", "a", "b", "c"])
    assert sp.set_facet_names(["a", "b", "c", "d"]).facet_names_ == ["a", "b", "c", "d"]


def test_methods_before_fit_raise_not_fitted():
    sp = SafetyPolytope()
    for call in (lambda: sp.predict(torch.zeros(1, 8)), lambda: sp.violations(torch.zeros(1, 8)),
                 lambda: sp.calibrate(torch.zeros(1, 8)), sp.folded, sp.config):
        with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
            call()
    assert issubclass(NotFittedError, InputError)


# --------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fits_and_scores_on_cuda():
    X, y, _ = known_polytope(600)
    sp = SafetyPolytope(n_facets=4, encoder="relu", n_features=32, device="cuda",
                        epochs=3).fit(X, y)
    assert sp.facets_.device.type == "cpu"  # learned state lives on the CPU
    v = sp.violations(X.cuda())
    assert v.device.type == "cuda"
    torch.testing.assert_close(v.cpu(), sp.violations(X), atol=1e-4, rtol=1e-4)
