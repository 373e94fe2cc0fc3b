"""Batched, padding-correct hidden-state extraction that stops after the deepest requested block.

Hooks on the requested decoder blocks capture their outputs; the hook on the deepest one raises a
private exception, so the blocks above it and the LM head never run. Batches are built from
examples sorted by length, so little is spent on padding, and explicit position ids make left and
right padding give the same states as an unpadded forward.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import InputError
from ..lm import LoadedModel
from .formatting import Encoded, Formatting

logger = logging.getLogger(__name__)

Pooling = Literal["last", "mean", "tokens"]
POOLINGS: tuple[str, ...] = ("last", "mean", "tokens")


@dataclass(frozen=True)
class FeatureSpec:
    """What to extract. ``pooling='tokens'`` returns the state of every response token."""

    layers: tuple[int, ...]
    pooling: Pooling = "last"
    formatting: Formatting = field(default_factory=Formatting)

    def __post_init__(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, int) else tuple(self.layers)
        if not layers:
            raise InputError("FeatureSpec needs at least one layer; got an empty list.")
        object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        if self.pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {', '.join(POOLINGS)}; got "
                             f"{self.pooling!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "pooling": self.pooling,
                "formatting": self.formatting.to_dict()}


class _StopForward(Exception):
    """Raised by the deepest hook: everything above it is not needed."""


def _accepts_position_ids(model: torch.nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


def forward_states(
    lm: LoadedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    layers: Sequence[int],
) -> dict[int, Tensor]:
    """Run the model up to block ``max(layers)``; return ``{layer: (batch, seq, d)}``."""
    captured: dict[int, Tensor] = {}
    deepest = max(layers)

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(_mod: torch.nn.Module, _args: Any, output: Any) -> None:
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [lm.blocks[layer - 1].register_forward_hook(make_hook(layer)) for layer in layers]
    kwargs: dict[str, Tensor | bool] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                        "use_cache": False}
    if _accepts_position_ids(lm.model):
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    try:
        with torch.inference_mode():
            lm.model(**kwargs)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [layer for layer in layers if layer not in captured]
    if missing:  # pragma: no cover - would mean the blocks are not on the forward path
        raise RuntimeError(f"blocks for layers {missing} did not run in the forward pass")
    return captured


def pad_batch(batch: Sequence[Encoded], pad_id: int, side: str, device: torch.device
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Pad to a rectangle. Returns ``(input_ids, attention_mask, offsets)``; ``offsets[r]`` is
    the padded position of row r's first real token."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    offsets = torch.zeros(len(batch), dtype=torch.long)
    for r, e in enumerate(batch):
        n = len(e.ids)
        start = width - n if side == "left" else 0
        ids[r, start:start + n] = torch.tensor(e.ids)
        mask[r, start:start + n] = 1
        offsets[r] = start
    return ids.to(device), mask.to(device), offsets


def pool(states: Tensor, mask: Tensor, offsets: Tensor, batch: Sequence[Encoded],
         pooling: str) -> list[Tensor]:
    """Per-example features (float32, CPU) from one padded batch of states (batch, seq, d)."""
    states = states.float()
    if pooling == "last":
        lengths = torch.tensor([len(e.ids) for e in batch])
        last = (offsets + lengths - 1).to(states.device)
        return list(states[torch.arange(len(batch), device=states.device), last].cpu())
    if pooling == "mean":
        m = mask.to(states.dtype).unsqueeze(-1)
        return list(((states * m).sum(1) / m.sum(1)).cpu())
    out = []
    for r, e in enumerate(batch):  # tokens: the response part of each row
        o = int(offsets[r])
        out.append(states[r, o + e.response_start:o + len(e.ids)].cpu())
    return out


def length_batches(encoded: Sequence[Encoded], batch_size: int, max_tokens: int | None
                   ) -> list[list[int]]:
    """Group example indices into batches of similar length (longest first).

    ``max_tokens`` caps batch_size x longest length so long prompts get smaller batches.
    """
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i].ids), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = len(encoded[current[0]].ids) if current else len(encoded[i].ids)
        full = len(current) >= batch_size or (
            max_tokens is not None and (len(current) + 1) * longest > max_tokens)
        if current and full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def extract_encoded(
    lm: LoadedModel,
    encoded: Sequence[Encoded],
    spec: FeatureSpec,
    *,
    batch_size: int = 16,
    max_tokens: int | None = 8192,
    padding_side: str = "right",
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, list[Tensor]]:
    """Extract features of already-encoded examples, in input order, without any cache."""
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right'; got {padding_side!r}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; got {batch_size}.")
    for layer in spec.layers:
        lm.check_layer(layer)
    results: dict[int, list[Tensor | None]] = {layer: [None] * len(encoded)
                                               for layer in spec.layers}
    pad_id = lm.tokenizer.pad_token_id
    for idx in length_batches(encoded, batch_size, max_tokens):
        batch = [encoded[i] for i in idx]
        ids, mask, offsets = pad_batch(batch, pad_id, padding_side, lm.device)
        states = forward_states(lm, ids, mask, spec.layers)
        for layer, h in states.items():
            for i, f in zip(idx, pool(h, mask, offsets, batch, spec.pooling)):
                results[layer][i] = f.clone()
        if on_batch is not None:
            on_batch(len(idx))
    return results  # type: ignore[return-value]
