"""Input validation: one declarative table of hyper-parameter constraints, one message template,
and the checks on features and labels. Every failure is an ``InputError`` that names what was
received, what was expected, and how to fix it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .encoders import ENCODERS
from .presets import PRESETS

OWNER = "SafetyPolytope"
PARAM_MESSAGE = "The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead."


class NotFittedError(InputError):
    """A method that needs a fitted polytope was called on an unfitted one."""


@dataclass(frozen=True)
class Constraint:
    """``expected`` completes the sentence "must be ..."; ``check`` says whether a value fits."""

    expected: str | Callable[[], str]
    check: Callable[[Any], bool]

    def describe(self) -> str:
        return self.expected() if callable(self.expected) else self.expected


def _is_int(v: Any, lo: int) -> bool:
    return bool(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                and v >= lo)


def _is_real(v: Any, lo: float, strict: bool) -> bool:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, Real):
        return False
    v = float(v)
    return np.isfinite(v) and (v > lo if strict else v >= lo)


def _is_device(v: Any) -> bool:
    if isinstance(v, torch.device):
        return True
    return isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None


CONSTRAINTS: dict[str, Constraint] = {
    "n_facets": Constraint("an int >= 1", lambda v: _is_int(v, 1)),
    "encoder": Constraint(lambda: "one of " + ", ".join(repr(e) for e in sorted(ENCODERS)),
                          lambda v: isinstance(v, str) and v in ENCODERS),
    "n_features": Constraint("an int >= 1 or 'auto'", lambda v: v == "auto" or _is_int(v, 1)),
    "margin": Constraint("a float > 0", lambda v: _is_real(v, 0.0, strict=True)),
    "unsafe_weight": Constraint("a float > 0", lambda v: _is_real(v, 0.0, strict=True)),
    "l1_features": Constraint("a float >= 0", lambda v: _is_real(v, 0.0, strict=False)),
    "l1_facets": Constraint("a float >= 0", lambda v: _is_real(v, 0.0, strict=False)),
    "reduction": Constraint("one of 'sum', 'mean'", lambda v: v in ("sum", "mean")),
    "entropy_reassign": Constraint("a bool", lambda v: isinstance(v, bool)),
    "standardize": Constraint("a bool", lambda v: isinstance(v, bool)),
    "init": Constraint("one of 'scaled', 'paper'", lambda v: v in ("scaled", "paper")),
    "lr": Constraint("a float > 0", lambda v: _is_real(v, 0.0, strict=True)),
    "epochs": Constraint("an int >= 1", lambda v: _is_int(v, 1)),
    "batch_size": Constraint("an int >= 1 or 'auto'", lambda v: v == "auto" or _is_int(v, 1)),
    "seed": Constraint("an int >= 0", lambda v: _is_int(v, 0)),
    "device": Constraint("'cpu', 'cuda', 'cuda:N' or 'auto'", _is_device),
    "early_stopping": Constraint("an int >= 0 (epochs of patience; 0 turns it off)",
                                 lambda v: _is_int(v, 0)),
    "preset": Constraint(lambda: "None or one of " + ", ".join(repr(p) for p in PRESETS),
                         lambda v: v is None or (isinstance(v, str) and v in PRESETS)),
}


def check_param(name: str, value: Any) -> None:
    c = CONSTRAINTS[name]
    if not c.check(value):
        raise InputError(PARAM_MESSAGE.format(name=name, owner=OWNER, expected=c.describe(),
                                              value=value))


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """Fill ``None`` values from the preset, then validate every value against the table."""
    check_param("preset", params.get("preset"))
    row = PRESETS[params.get("preset") or "default"]
    resolved = {k: (row[k] if params.get(k) is None else params[k]) for k in row}
    for name, value in resolved.items():
        check_param(name, value)
    # plain Python scalars, so configs serialise and compare cleanly
    for name in ("margin", "unsafe_weight", "l1_features", "l1_facets", "lr"):
        resolved[name] = float(resolved[name])
    for name in ("n_facets", "epochs", "seed", "early_stopping"):
        resolved[name] = int(resolved[name])
    for name in ("n_features", "batch_size"):
        if resolved[name] != "auto":
            resolved[name] = int(resolved[name])
    resolved["device"] = str(resolved["device"])
    resolved["preset"] = params.get("preset") or "default"
    return resolved


# --------------------------------------------------------------------------- data


def _rows_preview(rows: Tensor, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in rows[:limit])
    return shown + (", ..." if rows.numel() > limit else "")


def as_features(X: Any, what: str = "X", device: torch.device | None = None) -> Tensor:
    """``X`` as a float32 ``(n, d)`` tensor; refuses non-2-D, empty and non-finite input."""
    if isinstance(X, Tensor):
        t = X.detach()
    elif isinstance(X, np.ndarray):
        if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
            raise InputError(f"{what} must hold real numbers; got a numpy array of dtype "
                             f"{X.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(X))
    else:
        raise InputError(f"{what} must be a torch.Tensor or numpy array of shape (n_examples, "
                         f"n_features); got {type(X).__name__}. Convert it with "
                         f"torch.as_tensor(...).")
    if t.is_complex():
        raise InputError(f"{what} must hold real numbers; got dtype {t.dtype}.")
    if t.ndim != 2:
        hint = " (one example? use X.reshape(1, -1))" if t.ndim == 1 else ""
        raise InputError(f"{what} must be 2-D (n_examples, n_features); got shape "
                         f"{tuple(t.shape)}{hint}.")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {tuple(t.shape)}); it needs at least one row "
                         f"and one column.")
    t = t.to(device=device, dtype=torch.float32)
    finite = torch.isfinite(t).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().cpu()
        raise InputError(f"{what} has NaN or infinite values in {bad.numel()} of {t.shape[0]} "
                         f"rows (rows {_rows_preview(bad)}); drop or impute those rows first.")
    return t


def as_labels(y: Any, n: int, what: str = "y", device: torch.device | None = None) -> Tensor:
    """Labels as a float32 ``(n,)`` tensor of 0 (safe) / 1 (unsafe)."""
    if isinstance(y, Tensor):
        t = y.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(y))
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{what} must be a sequence of 0 (safe) / 1 (unsafe) labels; got "
                             f"{type(y).__name__}.") from None
    t = t.reshape(-1) if t.ndim == 2 and 1 in t.shape else t
    if t.ndim != 1:
        raise InputError(f"{what} must be 1-D (one label per row); got shape {tuple(t.shape)}.")
    if t.shape[0] != n:
        raise InputError(f"X has {n} rows but {what} has {t.shape[0]} labels; pass exactly one "
                         f"label per row of X.")
    if t.is_complex():
        raise InputError(f"{what} must hold 0 (safe) / 1 (unsafe); got dtype {t.dtype}.")
    tf = t.to(torch.float64)
    bad = ~((tf == 0) | (tf == 1))
    if bool(bad.any()):
        values = sorted({float(v) for v in tf[bad].unique()[:5].tolist()})
        shown = ", ".join(f"{v:g}" for v in values)
        raise InputError(f"{what} must hold only 0 (safe) and 1 (unsafe); got other values "
                         f"({shown}) in {int(bad.sum())} of {n} labels. Map your labels so "
                         f"that 1 = unsafe.")
    return tf.to(device=device, dtype=torch.float32)


def check_classes(y: Tensor, n_facets: int, what: str = "y") -> tuple[int, int]:
    """Both classes present and at least one unsafe example per facet."""
    n_unsafe = int(y.sum())
    n_safe = int(y.numel()) - n_unsafe
    if n_safe == 0 or n_unsafe == 0:
        only = "unsafe (1)" if n_safe == 0 else "safe (0)"
        raise InputError(f"{what} holds only {only} examples ({y.numel()} of them); "
                         f"SafetyPolytope needs both safe (0) and unsafe (1) examples.")
    if n_unsafe < n_facets:
        raise InputError(f"{what} has {n_unsafe} unsafe examples but n_facets={n_facets}; "
                         f"each facet needs at least one unsafe example: lower n_facets or add "
                         f"unsafe data.")
    return n_safe, n_unsafe


def as_categories(categories: Sequence[Any] | None, n: int) -> list[str] | None:
    if categories is None:
        return None
    if isinstance(categories, (str, bytes)):
        raise InputError("categories must be a sequence with one entry per row of X; got a "
                         "single string.")
    cats = ["" if c is None else str(c) for c in categories]
    if len(cats) != n:
        raise InputError(f"X has {n} rows but categories has {len(cats)} entries; pass one "
                         f"category (or None) per row.")
    return cats
