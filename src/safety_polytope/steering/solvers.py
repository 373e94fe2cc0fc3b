"""Steering solvers: pure, batched, branch-free corrections of hidden states.

Every solver maps ``h`` of shape ``(..., d)`` to ``(h_new, info)`` with ``h_new`` of the same
shape and dtype and ``info`` a dict of per-row tensors of shape ``(...,)``. They run inside a
forward hook for every decoded token, so they are written to stay on the device:

- no Python loop over rows, no host synchronisation (``.item()``, ``bool(tensor)``,
  ``torch.nonzero``), no data-dependent shapes; iteration counts are fixed arguments;
- maths in float32, cast back to ``h.dtype`` at the end;
- rows that are left alone (already satisfying the constraints, or outside ``mask``) are
  returned **bit-identical** (selected with ``torch.where``, never recomputed).

A polytope is ``v_k(h) = phi_k . f(h) - xi_k`` (see ``FoldedPolytope``); "with margin ``m``"
means ``v_k(h) <= -m`` for every facet ``k``. The registry ``SOLVERS`` maps names to wrappers
that take a ``FoldedPolytope`` and fold its per-facet thresholds into the offsets
(``v_k - t_k <= -m``).

Example::

    >>> import torch
    >>> phi = torch.tensor([[1.0, 0.0]]); xi = torch.tensor([0.0])
    >>> h_new, info = project_identity(torch.tensor([[2.0, 3.0]]), phi, xi, margin=0.5)
    >>> h_new
    tensor([[-0.5000,  3.0000]])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..polytope.encoders import get_encoder
from ..polytope.estimator import FoldedPolytope

Info = dict[str, Tensor]
Solver = Callable[..., tuple[Tensor, Info]]

#: Default FISTA iterations on the dual (accuracy vs an exact QP: see tests).
DEFAULT_N_ITER = 200
#: Default linearise-and-project rounds for the ReLU encoder.
DEFAULT_N_OUTER = 8
#: Default dual iterations per ReLU round.
DEFAULT_N_INNER = 100
#: Absolute tolerance on ``max_k v_k <= -m`` when reporting ``info["feasible"]``.
DEFAULT_TOL = 1e-4
_EPS = 1e-12


# --------------------------------------------------------------------------- helpers


def _flat(h: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``(..., d) -> (n, d)`` float32, and the leading shape to restore."""
    lead = tuple(h.shape[:-1])
    return h.reshape(-1, h.shape[-1]).to(torch.float32), lead


def _row_mask(mask: Tensor | None, n: int, lead: tuple[int, ...], device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    return mask.to(device=device, dtype=torch.bool).expand(lead).reshape(n)


def _finish(h: Tensor, new: Tensor, moved: Tensor) -> Tensor:
    """Rows in ``moved`` from ``new`` (cast to ``h.dtype``), the others bit-identical to ``h``."""
    lead = tuple(h.shape[:-1])
    new = new.reshape(h.shape).to(h.dtype)
    return torch.where(moved.reshape(*lead, 1), new, h)


@dataclass(frozen=True)
class ProjectionCache:
    """What the identity projection precomputes from the facets ``phi`` ``(K, d)``, once.

    Facets are scaled to unit norm (the same feasible set, better-conditioned dual):
    ``unit = phi / norms``, ``gram = unit unitᵀ`` ``(K, K)``, ``step = 1 / λ_max(gram)`` (the
    dual's Lipschitz step). Facets with a zero normal are constants and are dropped
    (``valid`` false): no move can change them.
    """

    unit: Tensor  # (K, d)
    norms: Tensor  # (K,)
    valid: Tensor  # (K,) bool
    gram: Tensor  # (K, K)
    step: Tensor  # () float32

    @classmethod
    def from_facets(cls, phi: Tensor) -> ProjectionCache:
        phi = phi.to(torch.float32)
        raw = phi.norm(dim=1)
        valid = raw > _EPS
        norms = torch.where(valid, raw, torch.ones_like(raw))
        unit = torch.where(valid[:, None], phi / norms[:, None], torch.zeros_like(phi))
        gram = unit @ unit.T
        # Built once, outside the hook, so an eigen-solve (and its sync) is fine here.
        lmax = torch.linalg.eigvalsh(gram.double()).max().clamp_min(1.0).to(torch.float32)
        return cls(unit=unit, norms=norms, valid=valid, gram=gram, step=1.0 / lmax)

    def to(self, device: torch.device | str) -> ProjectionCache:
        return ProjectionCache(*(t.to(device) for t in
                                 (self.unit, self.norms, self.valid, self.gram, self.step)))


def _rowdot(x: Tensor, mat: Tensor) -> Tensor:
    """``mat x`` per row: ``x`` ``(n, d)``, ``mat`` ``(K, d)`` or ``(n, K, d)`` -> ``(n, K)``.

    A broadcast product and a reduction rather than a GEMM, so a row's result does not depend
    on the batch it is in (GEMM kernels change with the batch size; the dual iteration can
    amplify those last-bit differences).
    """
    return (x.unsqueeze(-2) * mat).sum(-1)


def _gmul(lam: Tensor, gram: Tensor) -> Tensor:
    """``G λ`` per row: ``gram`` is ``(K, K)`` (shared) or ``(n, K, K)`` (per row)."""
    return _rowdot(lam, gram)


def _dual_fista(c: Tensor, gram: Tensor, step: Tensor, n_iter: int) -> Tensor:
    """``argmax_{λ >= 0} λᵀc - ½ λᵀGλ`` per row by FISTA with per-row adaptive restart.

    ``c`` ``(n, K)``; ``step`` a scalar or ``(n, 1)``; returns ``λ`` ``(n, K)``. Fixed
    iterations, no branches on data (restart is a ``torch.where``).
    """
    lam = torch.zeros_like(c)
    y = lam
    t = torch.ones(c.shape[0], 1, dtype=c.dtype, device=c.device)
    for _ in range(n_iter):
        new = torch.relu(y + step * (c - _gmul(y, gram)))
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        mom = new + ((t - 1.0) / t_new) * (new - lam)
        # O'Donoghue & Candès gradient restart: drop momentum where it points uphill.
        restart = ((y - new) * (new - lam)).sum(-1, keepdim=True) > 0
        y = torch.where(restart, new, mom)
        t = torch.where(restart, torch.ones_like(t_new), t_new)
        lam = new
    return lam


def _project_linear(h: Tensor, unit: Tensor, c: Tensor, gram: Tensor, step: Tensor,
                    needs: Tensor, n_iter: int) -> Tensor:
    """Minimum-norm move of rows ``needs`` of ``h`` ``(n, d)`` so ``unit·Δ <= -c``.

    ``unit`` ``(K, d)`` or ``(n, K, d)``; ``c`` ``(n, K)`` the (normalised) constraint values
    ``unit·h - offset + m``. Rows outside ``needs`` get ``λ = 0``.
    """
    c = torch.where(needs[:, None], c, torch.zeros_like(c))
    lam = _dual_fista(c, gram, step, n_iter)
    lam = torch.where(needs[:, None], lam, torch.zeros_like(lam))
    return h - (lam.unsqueeze(-1) * unit).sum(-2)


def _info(before: Tensor, after: Tensor, h: Tensor, h_new: Tensor, margin: float, tol: float,
          moved: Tensor, lead: tuple[int, ...]) -> Info:
    norm = torch.where(moved, (h_new - h).norm(dim=-1), torch.zeros_like(before))
    return {
        "violation_before": before.reshape(lead),
        "violation_after": after.reshape(lead),
        "correction_norm": norm.reshape(lead),
        "moved": moved.reshape(lead),
        "feasible": (after <= -margin + tol).reshape(lead),
    }


# --------------------------------------------------------------------------- project


def project_identity(h: Tensor, phi: Tensor, xi: Tensor, margin: float = 0.0, *,
                     n_iter: int = DEFAULT_N_ITER, cache: ProjectionCache | None = None,
                     mask: Tensor | None = None, tol: float = DEFAULT_TOL
                     ) -> tuple[Tensor, Info]:
    """Minimum-L2 correction onto ``{h': phi h' - xi <= -margin}`` (identity encoder).

    ``h`` ``(..., d)``, ``phi`` ``(K, d)``, ``xi`` ``(K,)``; ``mask`` ``(...,)`` bool selects
    the rows that may move (default all). Solves the dual
    ``max_{λ>=0} λᵀ(Φh - ξ + m) - ½ λᵀΦΦᵀλ`` by ``n_iter`` FISTA steps and returns
    ``h - Φᵀλ``. Rows already satisfying every facet with the margin, and unmasked rows, are
    returned bit-identical. Pass ``cache=ProjectionCache.from_facets(phi)`` to skip the
    per-call set-up (it must have been built from the same ``phi``).

    ``info`` (per row): ``violation_before``/``violation_after`` (``max_k v_k``),
    ``correction_norm``, ``moved`` and ``feasible`` (``after <= -margin + tol``).
    """
    x, lead = _flat(h)
    n = x.shape[0]
    phi = phi.to(device=x.device, dtype=torch.float32)
    xi = xi.to(device=x.device, dtype=torch.float32)
    if cache is None:
        cache = ProjectionCache.from_facets(phi)
    v = _rowdot(x, phi) - xi
    before = v.amax(-1)
    needs = (before + margin > 0) & _row_mask(mask, n, lead, x.device)
    c = torch.where(cache.valid, (v + margin) / cache.norms, torch.zeros_like(v))
    new = _project_linear(x, cache.unit, c, cache.gram, cache.step, needs, n_iter)
    new = torch.where(needs[:, None], new, x)
    after = (_rowdot(new, phi) - xi).amax(-1)
    return _finish(h, new, needs), _info(before, after, x, new, margin, tol, needs, lead)


def _relu_violations(x: Tensor, W: Tensor, b: Tensor, phi: Tensor, xi: Tensor) -> Tensor:
    return torch.relu(x @ W.T + b) @ phi.T - xi


def project_relu(h: Tensor, W: Tensor, b: Tensor, phi: Tensor, xi: Tensor, margin: float = 0.0,
                 *, n_outer: int = DEFAULT_N_OUTER, n_inner: int = DEFAULT_N_INNER,
                 mask: Tensor | None = None, tol: float = DEFAULT_TOL
                 ) -> tuple[Tensor, Info]:
    """Iterated linearised projection for ``v(h) = Φ ReLU(W h + b) - ξ`` (ReLU encoder).

    ``W`` ``(F, d)``, ``b`` ``(F,)``, ``phi`` ``(K, F)``, ``xi`` ``(K,)``. Each of ``n_outer``
    rounds linearises the encoder at the current iterate (active set ``W h + b > 0``, exact
    inside that region), giving per-row facet normals ``Φ diag(a) W`` in h-space, and projects
    the current iterate onto those linear constraints with ``n_inner`` dual steps. A row stops
    moving as soon as its true violations hold with the margin. Rows that are still infeasible
    after the cap are reported in ``info["feasible"]`` (false) and returned at their last
    iterate. Feasible and unmasked rows are returned bit-identical.
    """
    x, lead = _flat(h)
    n = x.shape[0]
    dev = x.device
    W, b, phi, xi = (t.to(device=dev, dtype=torch.float32) for t in (W, b, phi, xi))
    before = _relu_violations(x, W, b, phi, xi).amax(-1)
    needs0 = (before + margin > 0) & _row_mask(mask, n, lead, dev)
    cur = x
    for _ in range(n_outer):
        pre = cur @ W.T + b
        active = (pre > 0).to(torch.float32)  # (n, F)
        v = torch.relu(pre) @ phi.T - xi  # (n, K), true violations at cur
        needs = needs0 & (v.amax(-1) + margin > 0)
        normals = (phi.unsqueeze(0) * active.unsqueeze(1)) @ W  # (n, K, d)
        raw = normals.norm(dim=-1)  # (n, K)
        valid = raw > _EPS
        norms = torch.where(valid, raw, torch.ones_like(raw))
        unit = torch.where(valid.unsqueeze(-1), normals / norms.unsqueeze(-1),
                           torch.zeros_like(normals))
        gram = torch.bmm(unit, unit.transpose(1, 2))  # (n, K, K)
        # Gershgorin bound on λ_max: no eigen-solve (and no sync) inside the hook.
        step = 1.0 / gram.abs().sum(-1).amax(-1, keepdim=True).clamp_min(1.0)
        c = torch.where(valid, (v + margin) / norms, torch.zeros_like(v))
        stepped = _project_linear(cur, unit, c, gram, step, needs, n_inner)
        cur = torch.where(needs[:, None], stepped, cur)
    new = torch.where(needs0[:, None], cur, x)
    after = _relu_violations(new, W, b, phi, xi).amax(-1)
    return _finish(h, new, needs0), _info(before, after, x, new, margin, tol, needs0, lead)


# --------------------------------------------------------------------------- redirect


def redirect(h: Tensor, direction: Tensor, phi: Tensor | None = None, xi: Tensor | None = None,
             margin: float = 0.0, *, strength: float | None = None, max_scale: float = 10.0,
             mask: Tensor | None = None, tol: float = DEFAULT_TOL) -> tuple[Tensor, Info]:
    """Move masked rows of ``h`` ``(..., d)`` along the unit vector ``r = direction / |direction|``.

    With ``strength``: ``h + strength r`` (``phi``/``xi`` optional, used only for ``info``).
    Without: the smallest ``α >= 0`` with ``phi (h + α r) - xi <= -margin`` (identity facets
    ``phi`` ``(K, d)``, ``xi`` ``(K,)`` at the same layer), in closed form per facet with
    ``s_k = φ_k·r``: a violated facet needs ``s_k < 0`` and ``α >= (v_k + m) / -s_k``; a
    satisfied one with ``s_k > 0`` caps ``α <= -(v_k + m) / s_k``. Rows where no
    ``α <= max_scale`` works move by ``max_scale`` and are reported infeasible. A masked row
    that already satisfies the margin gets ``α = 0``. Unmasked rows are bit-identical.

    ``info`` adds ``alpha`` (the step taken, 0 for unmasked rows).
    """
    x, lead = _flat(h)
    n = x.shape[0]
    dev = x.device
    rows = _row_mask(mask, n, lead, dev)
    r = direction.to(device=dev, dtype=torch.float32).reshape(-1)
    r = r / r.norm().clamp_min(_EPS)
    has_polytope = phi is not None and xi is not None
    if has_polytope:
        phi = phi.to(device=dev, dtype=torch.float32)  # type: ignore[union-attr]
        xi = xi.to(device=dev, dtype=torch.float32)  # type: ignore[union-attr]
        v = _rowdot(x, phi) - xi
        before = v.amax(-1)
    else:
        before = torch.full((n,), float("nan"), device=dev)
    if strength is not None:
        alpha = torch.full((n,), float(strength), device=dev)
        ok = torch.ones(n, dtype=torch.bool, device=dev)
    else:
        if not has_polytope:
            raise ValueError("redirect without `strength` needs the identity facets `phi` and "
                             "`xi` to find the smallest safe step; pass them or a strength.")
        s = phi @ r  # (K,)
        e = v + margin  # (n, K); > 0 means the facet fails the margin
        violated = e > 0
        neg = s < 0
        pos = s > 0
        safe_s = torch.where(s == 0, torch.ones_like(s), s)
        lower = torch.where(violated & neg, e / -safe_s, torch.zeros_like(e)).amax(-1)
        upper = torch.where(~violated & pos, -e / safe_s, torch.full_like(e, math.inf)).amin(-1)
        hopeless = (violated & ~neg).any(-1)
        ok = ~hopeless & (lower <= upper) & (lower <= max_scale)
        alpha = torch.where(ok, lower, torch.full_like(lower, max_scale))
    alpha = torch.where(rows, alpha, torch.zeros_like(alpha))
    new = torch.where(rows[:, None], x + alpha[:, None] * r, x)
    if has_polytope:
        after = (_rowdot(new, phi) - xi).amax(-1)  # type: ignore[arg-type,operator]
    else:
        after = before
    info = _info(before, after, x, new, margin, tol, rows, lead)
    if has_polytope:
        info["feasible"] = info["feasible"] & ok.reshape(lead)
    else:
        info["feasible"] = ok.reshape(lead)
    info["alpha"] = alpha.reshape(lead)
    return _finish(h, new, rows), info


# --------------------------------------------------------------------------- safeflow


def safeflow(h: Tensor, folded: FoldedPolytope, steps: int = 1, lr: float = 0.01,
             lam: float = 1.0, lam_s: float = 1e-4, *, mask: Tensor | None = None,
             margin: float = 0.0, tol: float = DEFAULT_TOL) -> tuple[Tensor, Info]:
    """The paper's gradient steering: ``steps`` plain SGD steps from ``h`` on
    ``|h' - h|_1 / d + lam_s Σ_k v_k + lam Σ_k relu(v_k)`` with ``v = folded.violations - t``.

    Reference values: ``lr=0.01, lam=1.0, lam_s=1e-4``; ``steps=1`` is the released code,
    100 the paper's appendix. Works when called under ``torch.inference_mode()`` (the input
    and the polytope's tensors are cloned outside inference mode). Only ``mask`` rows move.
    ``info["feasible"]`` is ``max_k v_k <= -margin + tol`` after the steps.
    """
    encoder = get_encoder(folded.encoder)
    with torch.inference_mode(False):
        x0, lead = _flat(h.detach().clone())
        n, d = x0.shape
        dev = x0.device
        params = {k: t.detach().clone().to(device=dev, dtype=torch.float32)
                  for k, t in folded.encoder_params.items()}
        phi, xi, thr = (t.detach().clone().to(device=dev, dtype=torch.float32)
                        for t in (folded.facets, folded.offsets, folded.thresholds))
        rows = _row_mask(mask, n, lead, dev)

        def violations(z: Tensor) -> Tensor:
            return torch.nn.functional.linear(encoder.apply(params, z), phi, -xi) - thr

        with torch.enable_grad():
            cur = x0.clone()
            for _ in range(steps):
                z = cur.detach().requires_grad_(True)
                v = violations(z)
                obj = ((z - x0).abs().sum(-1) / d + lam_s * v.sum(-1)
                       + lam * torch.relu(v).sum(-1))
                (grad,) = torch.autograd.grad(obj.sum(), z)
                cur = z.detach() - lr * grad
        with torch.no_grad():
            before = violations(x0).amax(-1)
            new = torch.where(rows[:, None], cur, x0)
            after = violations(new).amax(-1)
        info = _info(before, after, x0, new, margin, tol, rows, lead)
        return _finish(h, new, rows), info


# --------------------------------------------------------------------------- registry


def _offsets(folded: FoldedPolytope) -> Tensor:
    """Offsets with the per-facet thresholds folded in: ``v - t <= -m`` as one linear test."""
    return folded.offsets + folded.thresholds


def project(h: Tensor, folded: FoldedPolytope, *, margin: float = 0.0, **kwargs: Any
            ) -> tuple[Tensor, Info]:
    """Minimum-norm projection for any built-in encoder (``identity`` or ``relu``)."""
    if folded.encoder == "identity":
        return project_identity(h, folded.facets, _offsets(folded), margin, **kwargs)
    if folded.encoder == "relu":
        p = folded.encoder_params
        return project_relu(h, p["W"], p["b"], folded.facets, _offsets(folded), margin,
                            **kwargs)
    raise ValueError(f"project supports the 'identity' and 'relu' encoders; got "
                     f"{folded.encoder!r}. Use 'safeflow' (any differentiable encoder).")


def redirect_polytope(h: Tensor, folded: FoldedPolytope, *, direction: Tensor,
                      margin: float = 0.0, **kwargs: Any) -> tuple[Tensor, Info]:
    """``redirect`` with the facets of an identity ``folded`` polytope (or only a strength)."""
    if folded.encoder != "identity" and kwargs.get("strength") is None:
        raise ValueError(f"redirect finds the smallest safe step only for the identity "
                         f"encoder; got {folded.encoder!r}. Pass a calibrated `strength`.")
    if folded.encoder != "identity":
        return redirect(h, direction, margin=margin, **kwargs)
    return redirect(h, direction, folded.facets, _offsets(folded), margin, **kwargs)


def _safeflow(h: Tensor, folded: FoldedPolytope, **kwargs: Any) -> tuple[Tensor, Info]:
    return safeflow(h, folded, **kwargs)


#: Solvers by name; each is ``(h, folded, **options) -> (h_new, info)``.
SOLVERS: dict[str, Solver] = {
    "project": project,
    "redirect": redirect_polytope,
    "safeflow": _safeflow,
}

