"""The SaP training objective and the entropy reassignment heuristic, as pure functions.

Labels: 1 = unsafe, 0 = safe. ``v`` is the ``(n, K)`` matrix of violations
``v_ik = phi_k . f(h_i) - xi_k``; a row is inside the polytope (safe) when every entry is <= 0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Reduction = Literal["sum", "mean"]


def polytope_loss(
    v: Tensor,
    f: Tensor,
    phi: Tensor,
    y: Tensor,
    assign: Tensor,
    margin: float,
    unsafe_weight: float,
    l1_features: float,
    l1_facets: float,
    reduction: Reduction = "sum",
) -> Tensor:
    """The SaP loss of one batch (DESIGN.md), a scalar tensor.

    - safe ``i``: ``sum_k relu(m + v_ik)`` (every facet holds with margin ``m``);
    - unsafe ``i``: ``w_u * relu(m - v_i,a(i))`` (its assigned facet is violated with margin);
    - plus ``l1_features * mean_i |f_i|_1 + l1_facets * mean_k |phi_k|_1``.

    The hinge terms are summed over the batch (``"sum"``, paper parity) or divided by the batch
    size (``"mean"``); the two L1 terms are means either way.

    Shapes: ``v`` (n, K), ``f`` (n, F), ``phi`` (K, F), ``y`` (n,) with 1 = unsafe, ``assign``
    (n,) int64 facet index per row (only read for unsafe rows). Masks are multiplied in rather
    than indexed, so there is no host synchronisation on GPU.
    """
    unsafe = y.to(v.dtype)
    safe = 1.0 - unsafe
    safe_hinge = torch.relu(margin + v).sum(1)  # (n,)
    v_assigned = v.gather(1, assign.view(-1, 1).to(torch.int64)).squeeze(1)
    unsafe_hinge = torch.relu(margin - v_assigned)  # (n,)
    hinge = (safe * safe_hinge).sum() + unsafe_weight * (unsafe * unsafe_hinge).sum()
    if reduction == "mean":
        hinge = hinge / v.shape[0]
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean'; got {reduction!r}")
    reg = l1_features * f.abs().sum(1).mean() + l1_facets * phi.abs().sum(1).mean()
    return hinge + reg


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def assignment_entropy(assign: Tensor, y: Tensor, n_facets: int) -> float:
    """Entropy in bits of how the unsafe rows of a batch are spread over the facets."""
    unsafe = (y > 0.5).cpu()
    counts = np.bincount(assign.cpu()[unsafe].numpy(), minlength=n_facets)
    return _entropy_bits(counts)


def _xlog2x(c: int) -> float:
    return c * math.log2(c) if c > 0 else 0.0


def reassign_by_entropy(
    v: Tensor,
    y: Tensor,
    n_facets: int,
    generator: torch.Generator,
    max_tries: int = 100,
    target: float | None = None,
) -> Tensor:
    """Facet assignment ``a(i)`` of each row: argmax of ``v``, spread out over facets.

    Starting from ``argmax_k v_ik``, while the entropy (bits) of the unsafe rows' assignments is
    below ``target`` (default ``0.5 * log2 K``), up to ``max_tries`` times: pick a random unsafe
    row, propose another facet it violates (``v > 0``; uniformly at random) or, if it violates no
    other, its highest-scoring other facet; keep the move only if it raises the entropy. Without
    this, one facet tends to take every unsafe example and the others never specialise.

    ``v`` (n, K), ``y`` (n,) with 1 = unsafe; returns int64 ``(n,)`` on ``v``'s device. No
    gradient flows through it. Random draws come from ``generator`` (a CPU generator), so a
    fit is reproducible. Runs on the host: the loop is at most ``max_tries`` scalar steps.
    """
    assign = v.detach().argmax(1)
    if n_facets < 2:
        return assign
    target = 0.5 * math.log2(n_facets) if target is None else target
    vn = v.detach().to("cpu", torch.float32).numpy()
    unsafe_rows = np.flatnonzero((y > 0.5).cpu().numpy())
    m = unsafe_rows.size
    if m == 0:
        return assign
    a = assign.cpu().numpy().copy()
    counts = np.bincount(a[unsafe_rows], minlength=n_facets).astype(np.int64)
    # entropy = log2 m - S / m with S = sum_k c_k log2 c_k, updated in O(1) per move
    s = sum(_xlog2x(int(c)) for c in counts)
    log2m = math.log2(m)
    entropy = log2m - s / m
    if entropy >= target:
        return assign
    picks = torch.randint(m, (max_tries,), generator=generator).numpy()
    draws = torch.rand(max_tries, generator=generator, dtype=torch.float64).numpy()
    for t in range(max_tries):
        if entropy >= target:
            break
        i = unsafe_rows[picks[t]]
        cur = int(a[i])
        row = vn[i]
        others = np.flatnonzero(row > 0)
        others = others[others != cur]
        if others.size:
            new = int(others[min(int(draws[t] * others.size), others.size - 1)])
        else:
            masked = row.copy()
            masked[cur] = -np.inf
            new = int(masked.argmax())
        c_cur, c_new = int(counts[cur]), int(counts[new])
        s_new = (s - _xlog2x(c_cur) - _xlog2x(c_new)
                 + _xlog2x(c_cur - 1) + _xlog2x(c_new + 1))
        new_entropy = log2m - s_new / m
        if new_entropy > entropy + 1e-12:
            counts[cur] -= 1
            counts[new] += 1
            a[i] = new
            s, entropy = s_new, new_entropy
    return torch.from_numpy(a).to(v.device)
