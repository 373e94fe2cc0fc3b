"""The training loop: Adam over full-tensor minibatches of a pre-loaded feature matrix.

Why not a DataLoader: the features are already one float32 tensor in memory (or on the GPU), so
a minibatch is one index into it; a DataLoader would add collation and worker overhead that costs
more than the arithmetic for polytopes of this size.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from .calibration import auroc
from .encoders import Encoder, EncoderParams
from .loss import polytope_loss, reassign_by_entropy

logger = logging.getLogger(__name__)

CHUNK = 8192  # rows per forward pass when scoring a whole matrix (bounds memory)


@dataclass
class TrainResult:
    encoder_params: EncoderParams
    facets: Tensor  # (K, F)
    offsets: Tensor  # (K,)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    batch_size: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def auto_batch_size(n: int) -> int:
    """About 64 steps per epoch, within [32, 256]: small data sets still get enough Adam steps
    in a fixed number of epochs, and large ones get batches big enough to use the CPU well."""
    return min(n, max(32, min(256, n // 64)))


def init_facets(K: int, F: int, scheme: str, generator: torch.Generator
                ) -> tuple[Tensor, Tensor]:
    """``(phi (K, F), xi (K,))``. ``paper``: standard normal, as the reference code;
    ``scaled``: ``phi ~ N(0, 1/F)``, ``xi = 0``, so initial violations are O(1) like the margin."""
    phi = torch.randn(K, F, generator=generator)
    if scheme == "paper":
        return phi, torch.randn(K, generator=generator)
    return phi / math.sqrt(F), torch.zeros(K)


def violations(encoder: Encoder, params: EncoderParams, phi: Tensor, xi: Tensor, z: Tensor
               ) -> tuple[Tensor, Tensor]:
    """``(v (n, K), f (n, F))`` for standardised inputs ``z`` ``(n, d)``."""
    f = encoder.apply(params, z)
    return torch.nn.functional.linear(f, phi, -xi), f


def _make_adam(tensors: list[Tensor], lr: float) -> torch.optim.Optimizer:
    # foreach Adam: a few vectorised passes per step instead of a Python loop per tensor
    try:
        return torch.optim.Adam(tensors, lr=lr, foreach=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(tensors, lr=lr)


@torch.no_grad()
def evaluate(encoder: Encoder, params: EncoderParams, phi: Tensor, xi: Tensor, z: Tensor,
             y: Tensor, p: dict[str, Any]) -> tuple[float, float]:
    """``(loss, auroc)`` on a held-out set: the training objective with mean reduction and plain
    argmax assignment (deterministic, no reassignment), and AUROC of ``max_k v_k``."""
    total, f_l1, scores = 0.0, 0.0, []
    for start in range(0, z.shape[0], CHUNK):
        zb, yb = z[start:start + CHUNK], y[start:start + CHUNK]
        v, f = violations(encoder, params, phi, xi, zb)
        total += float(polytope_loss(v, f, phi, yb, v.argmax(1), p["margin"],
                                     p["unsafe_weight"], 0.0, 0.0, "sum"))
        f_l1 += float(f.abs().sum())
        scores.append(v.max(1).values)
    n = z.shape[0]
    loss = (total / n + p["l1_features"] * f_l1 / n
            + p["l1_facets"] * float(phi.abs().sum(1).mean()))
    return loss, auroc(torch.cat(scores), y)


def train(z: Tensor, y: Tensor, validation: tuple[Tensor, Tensor] | None, encoder: Encoder,
          n_features: int, p: dict[str, Any], generator: torch.Generator) -> TrainResult:
    """Fit encoder parameters, facets and offsets on standardised ``z`` ``(n, d)``, ``y`` ``(n,)``.

    Every random draw (initialisation, permutations, reassignment) comes from ``generator``, a
    CPU generator, so the result depends only on the seed (and, on GPU, on kernel determinism).
    """
    t0 = time.perf_counter()
    device = z.device
    n, d = z.shape
    K = p["n_facets"]
    params = {k: t.to(device).requires_grad_(True)
              for k, t in encoder.init(d, n_features, generator).items()}
    phi0, xi0 = init_facets(K, n_features, p["init"], generator)
    phi = phi0.to(device).requires_grad_(True)
    xi = xi0.to(device).requires_grad_(True)
    opt = _make_adam([*params.values(), phi, xi], p["lr"])
    bs = auto_batch_size(n) if p["batch_size"] == "auto" else min(p["batch_size"], n)
    patience = p["early_stopping"]

    def snapshot() -> tuple[EncoderParams, Tensor, Tensor]:
        return ({k: t.detach().clone() for k, t in params.items()}, phi.detach().clone(),
                xi.detach().clone())

    best_state = snapshot()
    best_value, best_epoch, since_best = math.inf, 0, 0
    history: list[dict[str, Any]] = []
    stopped = False
    for epoch in range(1, p["epochs"] + 1):
        perm = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        usage = torch.zeros(K, device=device)
        n_batches = 0
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            zb, yb = z[idx], y[idx]
            v, f = violations(encoder, params, phi, xi, zb)
            if p["entropy_reassign"]:
                assign = reassign_by_entropy(v, yb, K, generator)
            else:
                assign = v.detach().argmax(1)
            loss = polytope_loss(v, f, phi, yb, assign, p["margin"], p["unsafe_weight"],
                                 p["l1_features"], p["l1_facets"], p["reduction"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            usage.index_add_(0, assign, yb)
            n_batches += 1
        record: dict[str, Any] = {"epoch": epoch, "loss": float(loss_sum) / n_batches,
                                  "assignment_entropy": _entropy_bits(usage)}
        history.append(record)
        if not math.isfinite(record["loss"]):
            raise InputError(f"training diverged: the loss became {record['loss']} at epoch "
                             f"{epoch}. Lower lr (now {p['lr']}), or use standardize=True.")
        if validation is None:
            logger.debug("epoch %d: %s", epoch, record)
            continue
        # Early stopping watches held-out loss only: the training loss of minibatch Adam is too
        # noisy to stop on (stopping on it cost 0.025 AUROC in benchmarks/fit.py).
        record["val_loss"], record["val_auroc"] = evaluate(
            encoder, params, phi.detach(), xi.detach(), *validation, p)
        logger.debug("epoch %d: %s", epoch, record)
        if best_epoch == 0 or record["val_loss"] < best_value - 1e-4 * max(1.0, abs(best_value)):
            best_value, best_epoch, since_best = record["val_loss"], epoch, 0
            if patience:
                best_state = snapshot()
        else:
            since_best += 1
            if patience and since_best >= patience:
                stopped = True
                logger.info("early stopping at epoch %d (best epoch %d)", epoch, best_epoch)
                break
    if validation is not None and patience:
        enc_params, phi_t, xi_t = best_state
    else:
        enc_params, phi_t, xi_t = snapshot()
        best_epoch = len(history)
    return TrainResult(encoder_params={k: t.cpu() for k, t in enc_params.items()},
                       facets=phi_t.cpu(), offsets=xi_t.cpu(), history=history,
                       best_epoch=best_epoch, batch_size=bs, stopped_early=stopped,
                       seconds=time.perf_counter() - t0)


def _entropy_bits(counts: Tensor) -> float:
    c = counts.detach().double().cpu()
    total = float(c.sum())
    if total <= 0:
        return 0.0
    q = c[c > 0] / total
    return float(-(q * q.log2()).sum())
