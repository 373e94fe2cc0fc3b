"""What a polytope was built on (model, layer, pooling, formatting) and what steers with it.

The estimator learns from a plain feature matrix, so it cannot know which model and layer the
features came from; the caller says so once with ``SafetyPolytope.set_context(...)``. The context
is saved in ``config.json`` and used to refuse a different model at load time and to make error
messages concrete ("fitted on 576 (layer 20 of smollm2-135m-instruct)").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, ModelError

# Fingerprint keys that identify *what kind* of model it is; "name" is reported, not compared,
# because one model can be named by an alias, a directory or a hub id.
IGNORED_FINGERPRINT_KEYS = frozenset({"name"})


def _plain(value: Any, what: str) -> Any:
    """``value`` as JSON-ready plain data (dicts, lists, str, numbers, bool, None)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, what) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict(), what)
    raise InputError(f"{what} must be plain JSON data (dict, list, str, number, bool, None); "
                     f"got {type(value).__name__}.")


def as_fingerprint(model: Any) -> dict[str, Any] | None:
    """A fingerprint dict from a dict, or from anything with a ``fingerprint`` attribute (such as
    ``lm.LoadedModel``)."""
    if model is None:
        return None
    fp = getattr(model, "fingerprint", model)
    if not isinstance(fp, Mapping):
        raise InputError(f"model must be a fingerprint dict (see lm.fingerprint) or a loaded "
                         f"model with a .fingerprint; got {type(model).__name__}.")
    return _plain(fp, "the model fingerprint")


@dataclass(frozen=True)
class PolytopeContext:
    """Where the features came from. Every field is optional; ``None`` means "not recorded"."""

    model: dict[str, Any] | None = None  # lm.fingerprint(...): name, architecture, sizes
    layer: int | None = None  # 1-based: output of decoder block L
    pooling: str | None = None  # "last", "mean" or "tokens"
    formatting: dict[str, Any] | None = None  # features.Formatting.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "layer": self.layer, "pooling": self.pooling,
                "formatting": self.formatting}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolytopeContext:
        return cls(model=d.get("model"), layer=d.get("layer"), pooling=d.get("pooling"),
                   formatting=d.get("formatting"))

    def describe(self) -> str:
        """E.g. ``"layer 20 of smollm2-135m-instruct, pooling 'last'"``; empty if unknown."""
        parts = []
        name = (self.model or {}).get("name")
        if self.layer is not None or name:
            where = f"layer {self.layer}" if self.layer is not None else "features"
            parts.append(f"{where} of {name}" if name else where)
        if self.pooling:
            parts.append(f"pooling {self.pooling!r}")
        return ", ".join(parts)


def make_context(model: Any = None, layer: int | None = None, pooling: str | None = None,
                 formatting: Any = None) -> PolytopeContext:
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)
                              or layer < 0):
        raise InputError(f"layer must be an int >= 0 (1-based decoder block; 0 = embeddings); "
                         f"got {layer!r}.")
    if pooling is not None and not isinstance(pooling, str):
        raise InputError(f"pooling must be a string such as 'last' or 'mean'; got {pooling!r}.")
    fmt = _plain(formatting, "formatting")
    if fmt is not None and not isinstance(fmt, dict):
        raise InputError(f"formatting must be a dict or a features.Formatting; got "
                         f"{type(formatting).__name__}.")
    return PolytopeContext(model=as_fingerprint(model), layer=layer, pooling=pooling,
                           formatting=fmt)


def describe_model(fp: Mapping[str, Any]) -> str:
    """``"smollm2 (LlamaForCausalLM, hidden size 576, 30 layers)"``."""
    return (f"{fp.get('name', '?')} ({fp.get('architecture', '?')}, hidden size "
            f"{fp.get('hidden_size', '?')}, {fp.get('num_layers', '?')} layers)")


def check_fingerprint(built_for: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Raise ``ModelError`` naming both models when any shared identifying key differs."""
    keys = (set(built_for) & set(given)) - IGNORED_FINGERPRINT_KEYS
    differ = sorted(k for k in keys if built_for[k] != given[k])
    if differ:
        raise ModelError(
            f"This SafetyPolytope was built for {describe_model(built_for)}, but the model given "
            f"is {describe_model(given)}; they differ in {', '.join(differ)}. Load the model the "
            f"polytope was built for, or fit a new polytope on features of this model.")


@dataclass
class SteeringSlot:
    """Steering settings saved with the polytope; filled in by the steering code.

    ``directions`` maps a name (e.g. ``"refusal"``) to a float32 tensor, typically ``(d,)``,
    read and written at ``layer`` (which may differ from the detection layer).
    """

    layer: int | None = None
    default_mode: str | None = None
    directions: dict[str, Tensor] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SteeringSlot):
            return NotImplemented
        return (self.layer == other.layer and self.default_mode == other.default_mode
                and self.directions.keys() == other.directions.keys()
                and all(torch.equal(t, other.directions[k]) for k, t in self.directions.items()))

    __hash__ = None  # type: ignore[assignment]
