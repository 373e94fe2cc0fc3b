"""Thresholds from a held-out safe set, and the AUROC used for monitoring.

A row is flagged when ``v_k > t_k`` for some facet k. Calibration picks the thresholds so that at
most ``floor(target_fpr * n)`` rows of the safe calibration set are flagged; the comparison is
strict, so ties at the threshold are never flagged and the bound holds exactly on that set.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def allowed_false_positives(n: int, target_fpr: float) -> int:
    # the small epsilon keeps e.g. 0.05 * 100 from rounding down to 4
    return min(n, math.floor(target_fpr * n + 1e-9))


def global_threshold(scores: Tensor, target_fpr: float) -> float:
    """One threshold ``t`` on ``scores`` ``(n,)`` with ``#(scores > t) <= target_fpr * n``.

    The smallest such ``t`` among the scores (the (r+1)-th largest, r = allowed count), so the
    detector flags as much as the budget allows; it may be below 0 (more sensitive than the
    fitted boundary) or above it.
    """
    desc = scores.detach().flatten().sort(descending=True).values
    r = allowed_false_positives(desc.numel(), target_fpr)
    if r >= desc.numel():
        return float(desc[-1]) - 1.0  # everything may be flagged
    return float(desc[r])


def facet_thresholds(v: Tensor, target_fpr: float) -> Tensor:
    """Per-facet thresholds ``(K,)`` for violations ``v`` ``(n, K)``.

    Every facet gets the same per-facet rank r (the (r+1)-th largest of its column), the largest
    r for which the union (rows flagged by any facet) stays within budget. The union count only
    grows with r, so a binary search finds it.
    """
    v = v.detach()
    n = v.shape[0]
    budget = allowed_false_positives(n, target_fpr)
    desc = v.sort(0, descending=True).values  # (n, K)

    def flagged(r: int) -> int:
        return int((v > desc[r]).any(1).sum())

    lo, hi = 0, min(budget, n - 1)  # flagged(0) == 0 always
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if flagged(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return desc[lo].clone()


def auroc(scores: Tensor, y: Tensor) -> float:
    """Area under the ROC curve, unsafe (y = 1) as the positive class; ties count one half.

    Mann-Whitney U from average ranks. NaN when only one class is present.
    """
    s = scores.detach().flatten().double().cpu()
    pos = (y.detach().flatten().cpu() > 0.5)
    n1 = int(pos.sum())
    n0 = s.numel() - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg_rank = ends - (counts.double() - 1.0) / 2.0  # 1-based average rank of each value
    ranks = avg_rank[inverse]
    u = float(ranks[pos].sum()) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)
