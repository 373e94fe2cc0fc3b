"""Steering solvers against independent computations (exact QP, closed forms, hand bounds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from safety_polytope.polytope.estimator import FoldedPolytope
from safety_polytope.steering import (
    SOLVERS,
    ProjectionCache,
    project_identity,
    project_relu,
    redirect,
    safeflow,
)

SETTINGS = settings(deadline=None, max_examples=50)
seeds = st.integers(0, 2**31 - 1)
margins = st.sampled_from([0.0, 0.1, 0.5])


def identity_case(seed: int, margin: float, n: int | None = None):
    """A random identity polytope with a strictly interior point, and random rows ``h``."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 9))
    K = int(rng.integers(1, 7))
    n = int(rng.integers(1, 6)) if n is None else n
    phi = rng.normal(size=(K, d))
    p = rng.normal(size=d)
    xi = phi @ p + rng.uniform(margin + 0.1, margin + 1.0, size=K)
    h = rng.normal(size=(n, d)) * 3.0
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(h), f(phi), f(xi), f(p)


def relu_case(seed: int, margin: float):
    g = torch.Generator().manual_seed(seed)
    d = int(torch.randint(2, 9, (1,), generator=g))
    K = int(torch.randint(1, 7, (1,), generator=g))
    n = int(torch.randint(1, 6, (1,), generator=g))
    F = 2 * d
    W = torch.randn(F, d, generator=g)
    b = torch.randn(F, generator=g) * 0.5
    phi = torch.randn(K, F, generator=g)
    p = torch.randn(d, generator=g)
    xi = torch.relu(W @ p + b) @ phi.T + margin + 0.5
    h = torch.randn(n, d, generator=g) * 3.0
    return h, W, b, phi, xi, p


def qp_reference(h: np.ndarray, phi: np.ndarray, xi: np.ndarray, m: float) -> np.ndarray:
    res = minimize(lambda z: 0.5 * ((z - h) ** 2).sum(), h, jac=lambda z: z - h,
                   method="SLSQP", options={"ftol": 1e-12, "maxiter": 500},
                   constraints=[{"type": "ineq", "fun": lambda z: -(phi @ z - xi + m),
                                 "jac": lambda z: -phi}])
    # SLSQP can stop with "positive directional derivative" at a converged point; judge the
    # reference by feasibility (its optimality is checked by the comparison itself).
    assert (phi @ res.x - xi + m).max() <= 1e-7, res.message
    return res.x


# --------------------------------------------------------------------------- project_identity


@SETTINGS
@given(seeds, margins)
def test_project_identity_feasible_rows_bit_identical(seed, margin):
    h, phi, xi, p = identity_case(seed, margin)
    h = torch.cat([h, p[None]])  # the interior point satisfies every facet with the margin
    out, info = project_identity(h, phi, xi, margin)
    keep = (h @ phi.T - xi).amax(-1) <= -margin
    assert keep[-1]
    assert torch.equal(out[keep], h[keep])
    assert not info["moved"][keep].any()
    assert torch.equal(info["correction_norm"][keep], torch.zeros(int(keep.sum())))


@SETTINGS
@given(seeds, margins)
def test_project_identity_makes_rows_feasible_with_margin(seed, margin):
    h, phi, xi, _ = identity_case(seed, margin)
    out, info = project_identity(h, phi, xi, margin)
    assert ((out @ phi.T - xi).amax(-1) <= -margin + 1e-4).all()
    assert info["feasible"].all()
    torch.testing.assert_close(info["violation_after"], (out @ phi.T - xi).amax(-1))


@SETTINGS
@given(seeds, margins)
def test_project_identity_matches_exact_qp(seed, margin):
    h, phi, xi, _ = identity_case(seed, margin, n=1)
    out, _ = project_identity(h, phi, xi, margin)
    ref = qp_reference(h[0].double().numpy(), phi.double().numpy(), xi.double().numpy(), margin)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(out[0].double().numpy() - ref).max() <= 1e-4 * scale


@SETTINGS
@given(seeds, margins)
def test_project_identity_row_alone_equals_row_in_batch(seed, margin):
    h, phi, xi, _ = identity_case(seed, margin)
    batch, _ = project_identity(h, phi, xi, margin)
    for i in range(h.shape[0]):
        alone, _ = project_identity(h[i:i + 1], phi, xi, margin)
        torch.testing.assert_close(alone[0], batch[i], atol=1e-6, rtol=1e-6)


def test_project_identity_hand_example_cache_mask_and_dtype():
    phi = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    xi = torch.zeros(2)
    h = torch.tensor([[[2.0, 3.0], [-1.0, -1.0]], [[1.0, -2.0], [5.0, 5.0]]])  # (2, 2, d)
    cache = ProjectionCache.from_facets(phi)
    mask = torch.tensor([[True, True], [True, False]])
    out, info = project_identity(h, phi, xi, 0.5, cache=cache, mask=mask)
    expected = torch.tensor([[[-0.5, -0.5], [-1.0, -1.0]], [[-0.5, -2.0], [5.0, 5.0]]])
    torch.testing.assert_close(out, expected)
    assert info["feasible"].shape == (2, 2)
    assert info["feasible"].tolist() == [[True, True], [True, False]]
    # A bfloat16 input comes back as bfloat16, untouched rows bit-identical.
    hb = h.to(torch.bfloat16)
    outb, _ = project_identity(hb, phi, xi, 0.5, mask=mask)
    assert outb.dtype == torch.bfloat16
    assert torch.equal(outb[1, 1], hb[1, 1]) and torch.equal(outb[0, 1], hb[0, 1])


# --------------------------------------------------------------------------- project_relu


@SETTINGS
@given(seeds, margins)
def test_project_relu_reports_feasible_truthfully_and_keeps_safe_rows(seed, margin):
    h, W, b, phi, xi, p = relu_case(seed, margin)
    h = torch.cat([h, p[None]])
    out, info = project_relu(h, W, b, phi, xi, margin)
    true_before = (torch.relu(h @ W.T + b) @ phi.T - xi).amax(-1)
    true_after = (torch.relu(out @ W.T + b) @ phi.T - xi).amax(-1)
    assert (true_after[info["feasible"]] <= -margin + 1e-4).all()
    keep = true_before <= -margin
    assert keep[-1]
    assert torch.equal(out[keep], h[keep])
    torch.testing.assert_close(info["violation_after"], true_after)


def test_project_relu_mostly_succeeds():
    moved = feasible = 0
    for seed in range(40):
        h, W, b, phi, xi, _ = relu_case(seed, 0.1)
        _, info = project_relu(h, W, b, phi, xi, 0.1)
        moved += int(info["moved"].sum())
        feasible += int((info["feasible"] & info["moved"]).sum())
    assert moved > 0 and feasible >= 0.75 * moved


def test_project_relu_equals_identity_projection_when_all_units_active():
    # W = I, b large: ReLU is the identity near h, so the linearisation is exact.
    h, phi, xi, _ = identity_case(3, 0.1)
    d = h.shape[1]
    b = torch.full((d,), 100.0)
    out_relu, info = project_relu(h, torch.eye(d), b, phi, xi + phi @ b, 0.1)
    out_id, _ = project_identity(h, phi, xi, 0.1)
    torch.testing.assert_close(out_relu, out_id, atol=1e-4, rtol=0)
    assert info["feasible"].all()


# --------------------------------------------------------------------------- redirect


@SETTINGS
@given(seeds, margins, st.booleans())
def test_redirect_moves_only_masked_rows_and_reports_truthfully(seed, margin, use_strength):
    h, phi, xi, _ = identity_case(seed, margin)
    rng = np.random.default_rng(seed + 1)
    r = torch.tensor(rng.normal(size=h.shape[1]), dtype=torch.float32)
    mask = torch.tensor(rng.random(h.shape[0]) < 0.6)
    strength = 2.0 if use_strength else None
    out, info = redirect(h, r, phi, xi, margin, strength=strength, max_scale=5.0, mask=mask)
    assert torch.equal(out[~mask], h[~mask])
    after = (out @ phi.T - xi).amax(-1)
    assert (after[info["feasible"] & mask] <= -margin + 1e-4).all()
    unit = r / r.norm()
    expected = h + info["alpha"][:, None] * unit
    torch.testing.assert_close(out[mask], expected[mask])
    if use_strength:
        assert torch.equal(info["alpha"][mask], torch.full((int(mask.sum()),), 2.0))


@SETTINGS
@given(seeds, margins)
def test_redirect_step_is_smallest_safe_step(seed, margin):
    # Direction pointing at the interior point: the step exists; check minimality by bisection.
    h, phi, xi, p = identity_case(seed, margin, n=1)
    r = p - h[0]
    out, info = redirect(h, r, phi, xi, margin, max_scale=1e6)
    assert info["feasible"].all()
    alpha = float(info["alpha"][0])
    unit = r / r.norm()
    if alpha > 1e-3:
        shorter = h[0] + (alpha * (1 - 1e-3)) * unit
        assert (shorter @ phi.T - xi).amax() > -margin


def test_redirect_hopeless_rows_move_by_max_scale():
    phi = torch.tensor([[1.0, 0.0]])
    xi = torch.zeros(1)
    h = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    out, info = redirect(h, torch.tensor([0.0, 3.0]), phi, xi, 0.1, max_scale=2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))
    assert info["feasible"].tolist() == [False, True]
    with pytest.raises(ValueError, match="strength"):
        redirect(h, torch.ones(2))


# --------------------------------------------------------------------------- safeflow


def _folded_identity(phi: torch.Tensor, xi: torch.Tensor) -> FoldedPolytope:
    return FoldedPolytope("identity", {}, phi, xi, torch.zeros(phi.shape[0]))


@SETTINGS
@given(seeds, st.booleans())
def test_safeflow_one_step_is_bounded_and_masked(seed, inference):
    h, phi, xi, _ = identity_case(seed, 0.0)
    folded = _folded_identity(phi, xi)
    mask = torch.tensor(np.random.default_rng(seed).random(h.shape[0]) < 0.6)
    lr, lam, lam_s = 0.01, 1.0, 1e-4
    if inference:
        with torch.inference_mode():
            h_inf = h.clone()
            out, info = safeflow(h_inf, folded, steps=1, lr=lr, lam=lam, lam_s=lam_s, mask=mask)
    else:
        out, info = safeflow(h, folded, steps=1, lr=lr, lam=lam, lam_s=lam_s, mask=mask)
    assert torch.equal(out[~mask], h[~mask])
    # Hand gradient at h' = h (the L1 term's subgradient is 0 there).
    v = h @ phi.T - xi
    grad = (lam_s + lam * (v > 0).float()) @ phi
    torch.testing.assert_close(out[mask], (h - lr * grad)[mask])
    bound = lr * (1.0 / h.shape[1] + (lam + lam_s) * phi.abs().sum(0))
    assert ((out - h).abs() <= bound + 1e-6).all()


def test_safeflow_many_steps_reduce_violation_relu_and_registry():
    h, W, b, phi, xi, _ = relu_case(7, 0.0)
    folded = FoldedPolytope("relu", {"W": W, "b": b}, phi, xi, torch.zeros(phi.shape[0]))
    out, info = SOLVERS["safeflow"](h, folded, steps=100, lr=0.01)
    worse = info["violation_after"] > info["violation_before"] + 1e-5
    assert not (worse & (info["violation_before"] > 0)).any()
    assert set(SOLVERS) == {"project", "redirect", "safeflow"}


def test_registry_folds_thresholds_into_offsets():
    phi = torch.tensor([[1.0, 0.0]])
    folded = FoldedPolytope("identity", {}, phi, torch.zeros(1), torch.tensor([1.0]))
    h = torch.tensor([[2.0, 0.0], [0.5, 0.0]])
    out, info = SOLVERS["project"](h, folded, margin=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.0], [0.5, 0.0]]))
    assert info["moved"].tolist() == [True, False]
    out, info = SOLVERS["redirect"](h, folded, direction=torch.tensor([-2.0, 0.0]), margin=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.0], [0.5, 0.0]]))
    rf = FoldedPolytope("relu", {"W": torch.eye(2), "b": torch.zeros(2)}, phi, torch.zeros(1),
                        torch.zeros(1))
    with pytest.raises(ValueError, match="strength"):
        SOLVERS["redirect"](h, rf, direction=torch.ones(2))
