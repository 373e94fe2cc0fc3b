"""Generate with a polytope applied, one result record per prompt (``sap generate``).

Prompts are grouped into batches by length here, in the order ``generation.generate_batch``
keeps them, so that each batch row of the steering handle maps back to its prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..features.extract import length_batches
from ..features.formatting import Formatting, encode
from ..generation import generate_batch
from ..lm import LoadedModel
from ..polytope import SafetyPolytope
from .hook import steer

GENERATE_MODES: tuple[str, ...] = ("redirect", "project", "safeflow", "detect", "off")


def generate_steered(lm: LoadedModel, polytope: SafetyPolytope, prompts: Sequence[str], *,
                     mode: str = "redirect", batch_size: int = 8, max_new_tokens: int = 64,
                     temperature: float = 0.0, seed: int = 0, **options: Any
                     ) -> list[dict[str, Any]]:
    """One dict per prompt, in input order: ``prompt``, ``response``, ``steered``,
    ``steered_tokens``, ``first_trigger_token`` (0 = decided at the last prompt token),
    ``facets_triggered``, ``max_violation`` (relative to the calibrated thresholds).

    ``mode="off"`` is the plain model, so runs can be compared line by line.
    """
    fmt_dict = polytope.context.formatting or {}
    fmt = Formatting(**fmt_dict) if isinstance(fmt_dict, dict) else fmt_dict
    encoded = encode(lm.tokenizer, prompts, fmt=fmt)
    out: list[dict[str, Any] | None] = [None] * len(prompts)
    for idx in length_batches(encoded, batch_size, None):
        batch = [prompts[i] for i in idx]  # already in generate_batch's own order
        kw = dict(max_new_tokens=max_new_tokens, batch_size=len(batch),
                  temperature=temperature, seed=seed, formatting=fmt, show_progress=False)
        if mode == "off":
            responses = generate_batch(lm, batch, **kw)  # type: ignore[arg-type]
            events = []
        else:
            with steer(lm, polytope, mode, **options) as handle:
                responses = generate_batch(lm, batch, **kw)  # type: ignore[arg-type]
            events = handle.events()
        for row, (i, response) in enumerate(zip(idx, responses)):
            mine = [e for e in events if e.row == row]
            first = next((e for e in mine if e.position == 0), None)
            out[i] = {
                "prompt": prompts[i], "response": response,
                "steered": first is not None and mode != "detect",
                "steered_tokens": sum(e.correction_norm > 0 for e in mine),
                "first_trigger_token": 0 if first is not None else None,
                "facets_triggered": first.facets if first is not None else [],
                "max_violation": first.violation_before if first is not None else None,
            }
    return out  # type: ignore[return-value]
