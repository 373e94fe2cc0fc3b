"""Apply a polytope while the model generates: forward hooks, a per-sequence latch, an audit trail.

``with steer(lm, polytope, mode="redirect"): lm.model.generate(...)`` — ``generate`` itself is
untouched. At prefill the last prompt token is scored at the detection layer and the decision is
latched per row; flagged rows then have their states changed at the steering layer at every later
decoded token (and at the flagged position itself when the steering layer is not below the
detection layer). Unflagged rows pass through bit-identically (``torch.where`` on a row mask), so
a batch never influences its own rows' neighbours and detaching restores the model exactly.

All state (latch, step counter, recorded tensors) lives in the ``SteeringHandle``, never on the
model or the polytope. The decode path does no host synchronisation: per-step tensors are kept
and turned into events only when ``handle.events()`` is called after generation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from ..errors import InputError
from ..lm import LoadedModel
from ..polytope import SafetyPolytope

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("detect", "redirect", "project", "safeflow", "refuse")

Corrector = Callable[[Tensor], Tensor]  # (n, d) float32 states -> corrected states

# Fraction of the learned refusal direction (mean refusing minus mean complying state) added to
# flagged rows. On the default model 0.75 turned 18/24 held-out harmful prompts into refusals
# with 2 degenerate replies; 1.0 gave 21/24 but 15 degenerate (BENCHMARKS.md, steer_modes.py).
DEFAULT_STRENGTH = 0.75


@dataclass
class SteeringEvent:
    """One steered (row, position): what was violated, by how much, and what was done.

    Violations are relative to the calibrated thresholds (``v_k - t_k``; > 0 is violated), the
    maximum over facets; ``row`` is the row of the batch as passed to ``generate``."""

    row: int
    position: int  # 0 = the last prompt token, k = the k-th decoded token
    facets: list[str]
    violation_before: float
    violation_after: float | None
    correction_norm: float
    action: str


@dataclass
class SteeringHandle:
    """Hooks of one attachment plus the state of the generation running under them."""

    lm: LoadedModel
    polytope: SafetyPolytope
    mode: str
    detect_layer: int
    steer_layer: int
    hooks: list[RemovableHandle] = field(default_factory=list)
    flagged: Tensor | None = None  # (batch,) bool, latched at prefill
    step: int = 0  # 0 = prefill, then one per decoded token
    _records: list[tuple[int, Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)

    def detach(self) -> None:
        """Remove exactly the hooks this handle registered."""
        for h in self.hooks:
            h.remove()
        self.hooks.clear()

    def events(self) -> list[SteeringEvent]:
        """Materialise the audit trail (one host transfer, after generation)."""
        names = self.polytope.facet_names_
        out = []
        for step, mask, v_before, v_after, norm in self._records:
            mask_c, vb, na = mask.cpu(), v_before.cpu(), norm.cpu()
            va = v_after.cpu() if v_after is not None else None
            for r in torch.nonzero(mask_c).flatten().tolist():
                violated = [names[k] for k in range(len(names)) if vb[r, k] > 0]
                out.append(SteeringEvent(
                    row=r, position=step, facets=violated,
                    violation_before=float(vb[r].max()),
                    violation_after=float(va[r].max()) if va is not None else None,
                    correction_norm=float(na[r]), action=self.mode))
        return out


def _default_corrector(polytope: SafetyPolytope, mode: str, strength: float | None,
                       device: torch.device, options: dict[str, Any]) -> Corrector | None:
    if mode == "detect" or mode == "refuse":
        return None
    if mode in ("project", "safeflow"):
        from dataclasses import replace

        from .solvers import SOLVERS

        f = polytope.folded()
        folded = replace(f, facets=f.facets.to(device), offsets=f.offsets.to(device),
                         thresholds=f.thresholds.to(device),
                         encoder_params={k: v.to(device) for k, v in f.encoder_params.items()})
        solve = SOLVERS[mode]

        def correct(h: Tensor) -> Tensor:
            return solve(h, folded, **options)[0]

        return correct
    if mode == "redirect":
        directions = polytope.steering.directions
        if "refusal" not in directions:
            raise InputError("mode='redirect' needs the polytope's learned refusal direction, "
                             "but this artifact has none; refit with `sap fit` (it learns one) "
                             "or use mode='refuse' or 'detect'.")
        r = directions["refusal"].to(device, torch.float32)
        step = r * (DEFAULT_STRENGTH if strength is None else float(strength))

        def push(h: Tensor) -> Tensor:
            return h + step

        return push
    raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")


def attach(lm: LoadedModel, polytope: SafetyPolytope, mode: str = "redirect", *,
           strength: float | None = None, corrector: Corrector | None = None,
           **solver_options: Any) -> SteeringHandle:
    """Register the hooks (all or none) and return the handle that owns them.

    ``mode``: ``detect`` (record only); ``redirect`` (add ``strength`` x the learned refusal
    direction to flagged rows; default ``DEFAULT_STRENGTH``); ``project`` (minimum-L2 move back
    inside the polytope with ``margin=``: the paper's geometry); ``safeflow`` (the paper's
    gradient steps: ``steps=``, ``lr=``, ``lam=``, ``lam_s=``); ``refuse`` (the flag only;
    forcing a refusal text is not built yet). ``solver_options`` go to the ``project`` or
    ``safeflow`` solver.
    ``corrector`` overrides the state change for flagged rows.
    """
    ctx = polytope.context
    if ctx.layer is None:
        raise InputError("This polytope records no detection layer (set_context was never "
                         "called); it cannot be attached to a model.")
    if ctx.pooling not in (None, "last"):
        raise InputError(f"Prefill detection needs a prompt-level polytope (pooling 'last'); "
                         f"this one was trained with pooling {ctx.pooling!r}.")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    detect_layer = lm.check_layer(ctx.layer)
    steer_layer = lm.check_layer(polytope.steering.layer or detect_layer)
    folded = polytope.folded()
    dev = lm.device
    facets = folded.facets.to(dev, torch.float32)
    offsets = folded.offsets.to(dev, torch.float32)
    thresholds = folded.thresholds.to(dev, torch.float32)
    if folded.encoder != "identity":
        from ..polytope.encoders import get_encoder

        enc = get_encoder(folded.encoder)
        params = {k: v.to(dev, torch.float32) for k, v in folded.encoder_params.items()}

        def violations(h: Tensor) -> Tensor:
            return torch.nn.functional.linear(enc.apply(params, h), facets, -offsets - thresholds)
    else:
        def violations(h: Tensor) -> Tensor:
            return torch.nn.functional.linear(h, facets, -offsets - thresholds)

    fix = corrector or _default_corrector(polytope, mode, strength, dev, solver_options)
    handle = SteeringHandle(lm=lm, polytope=polytope, mode=mode, detect_layer=detect_layer,
                            steer_layer=steer_layer)

    zero = torch.zeros((), device=dev)  # hoisted: no allocation per decoded token

    def change(h_last: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Correct flagged rows of ``(batch, d)`` states; unflagged rows are returned as is."""
        x = h_last.float()
        if fix is None:
            return h_last, zero.expand(x.shape[0]), None
        new = fix(x)
        out = torch.where(mask.unsqueeze(-1), new.to(h_last.dtype), h_last)
        norm = torch.where(mask, (new - x).norm(dim=-1), zero)
        return out, norm, violations(out.float())

    def detect_hook(_mod: torch.nn.Module, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[1] > 1:  # prefill: a new generation starts
            handle.step = 0
            handle._records.clear()
            v = violations(hidden[:, -1].float())
            handle.flagged = (v > 0).any(-1)
            if steer_layer == detect_layer:
                new_last, norm, after = change(hidden[:, -1], handle.flagged)
                handle._records.append((0, handle.flagged, v, after, norm))
                if fix is not None:
                    hidden = torch.cat([hidden[:, :-1], new_last.unsqueeze(1)], dim=1)
                    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            else:
                handle._records.append((0, handle.flagged, v, None,
                                        torch.zeros_like(v[:, 0])))
        return None

    def steer_hook(_mod: torch.nn.Module, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[1] > 1:
            # Prefill at a steering layer above the detection layer: the decision is known.
            if steer_layer > detect_layer and handle.flagged is not None and fix is not None:
                new_last, _, _ = change(hidden[:, -1], handle.flagged)
                hidden = torch.cat([hidden[:, :-1], new_last.unsqueeze(1)], dim=1)
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            return None
        handle.step += 1
        if handle.flagged is None or fix is None:
            return None
        v_before = violations(hidden[:, -1].float())
        new_last, norm, after = change(hidden[:, -1], handle.flagged)
        handle._records.append((handle.step, handle.flagged, v_before, after, norm))
        hidden = new_last.unsqueeze(1)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    blocks = lm.blocks
    try:
        handle.hooks.append(blocks[detect_layer - 1].register_forward_hook(detect_hook))
        if mode != "detect":
            handle.hooks.append(blocks[steer_layer - 1].register_forward_hook(steer_hook))
    except Exception:
        handle.detach()
        raise
    return handle


@contextlib.contextmanager
def steer(lm: LoadedModel, polytope: SafetyPolytope, mode: str = "redirect",
          **kwargs: Any) -> Iterator[SteeringHandle]:
    """``with steer(lm, polytope) as h: lm.model.generate(...)``; hooks are removed on exit,
    also when generation raises."""
    handle = attach(lm, polytope, mode, **kwargs)
    try:
        yield handle
    finally:
        handle.detach()
