"""Concept encoders: the map ``f`` from (standardised) hidden states to the facets' space.

An encoder is a small record of plain functions behind a name, so the CLI can say ``relu`` and
Python users can register their own. Parameters are a flat ``dict[str, Tensor]`` so they save to
safetensors as they are and their shapes can be checked against ``config.json``.

Standardisation (``z = (h - mean) / scale``) is applied before any encoder. It is affine, so it
folds into the first linear map (``fold_standardization``): steering can then work on raw hidden
states with no inversion, which is exact in real arithmetic (see ``SafetyPolytope.folded``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError

EncoderParams = dict[str, Tensor]


@dataclass(frozen=True)
class Encoder:
    """A concept encoder ``f: (n, d) -> (n, F)``.

    ``init(d, F, generator)`` returns float32 CPU parameters drawn from ``generator`` only;
    ``apply(params, z)`` maps ``(n, d)`` to ``(n, F)`` and must be differentiable in ``params``;
    ``shapes(d, F)`` names every parameter's shape (what a loader checks); ``n_features(d, F)``
    resolves the feature count (``F=None`` means the encoder's default).
    """

    name: str
    description: str
    init: Callable[[int, int, torch.Generator], EncoderParams]
    apply: Callable[[EncoderParams, Tensor], Tensor]
    shapes: Callable[[int, int], dict[str, tuple[int, ...]]]
    n_features: Callable[[int, int | None], int]
    fold: Callable[[EncoderParams, Tensor, Tensor], EncoderParams] | None = None


# --------------------------------------------------------------------------- identity


def _identity_apply(params: EncoderParams, z: Tensor) -> Tensor:
    return z


IDENTITY = Encoder(
    name="identity",
    description="f(z) = z: the facets live in (standardised) hidden-state space; F = d",
    init=lambda d, F, g: {},
    apply=_identity_apply,
    shapes=lambda d, F: {},
    n_features=lambda d, F: d,
)


# --------------------------------------------------------------------------- relu


def _relu_init(d: int, F: int, generator: torch.Generator) -> EncoderParams:
    # Xavier-uniform W and zero b, as in the reference implementation.
    bound = math.sqrt(6.0 / (d + F))
    w = (torch.rand(F, d, generator=generator) * 2.0 - 1.0) * bound
    return {"W": w, "b": torch.zeros(F)}


def _relu_apply(params: EncoderParams, z: Tensor) -> Tensor:
    return torch.relu(torch.nn.functional.linear(z, params["W"], params["b"]))


def _relu_fold(params: EncoderParams, mean: Tensor, scale: Tensor) -> EncoderParams:
    # W ((h - mu) / s) + b = (W / s) h + (b - W (mu / s))
    w = params["W"] / scale
    return {"W": w, "b": params["b"] - params["W"] @ (mean / scale)}


RELU = Encoder(
    name="relu",
    description="f(z) = ReLU(W z + b) with F features (the paper's concept encoder); "
                "default F = 4 d",
    init=_relu_init,
    apply=_relu_apply,
    shapes=lambda d, F: {"W": (F, d), "b": (F,)},
    n_features=lambda d, F: 4 * d if F is None else F,
    fold=_relu_fold,
)

ENCODERS: dict[str, Encoder] = {IDENTITY.name: IDENTITY, RELU.name: RELU}


def register_encoder(encoder: Encoder) -> Encoder:
    """Make ``encoder`` available by name (to ``SafetyPolytope(encoder=...)`` and loaders)."""
    if encoder.name in ENCODERS and ENCODERS[encoder.name] is not encoder:
        raise InputError(f"an encoder named {encoder.name!r} is already registered; "
                         f"pick another name.")
    ENCODERS[encoder.name] = encoder
    return encoder


def get_encoder(name: str) -> Encoder:
    try:
        return ENCODERS[name]
    except KeyError:
        raise InputError(f"unknown encoder {name!r}; known encoders: "
                         f"{', '.join(sorted(ENCODERS))} (register others with "
                         f"register_encoder).") from None


# --------------------------------------------------------------------------- standardisation


def fit_standardization(x: Tensor, enabled: bool = True) -> tuple[Tensor, Tensor]:
    """Per-column ``(mean, scale)`` of ``x`` ``(n, d)``; constant columns get scale 1.

    With ``enabled=False`` returns zeros and ones, so every fitted polytope has the same tensors.
    """
    d = x.shape[1]
    if not enabled:
        return torch.zeros(d, device=x.device), torch.ones(d, device=x.device)
    mean = x.mean(0)
    scale = x.std(0, unbiased=False)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return mean, scale


def standardize(h: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """``(h - mean) / scale``, ``(n, d) -> (n, d)``."""
    return (h - mean) / scale


def unstandardize(z: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """The inverse of ``standardize``: ``z * scale + mean`` (exact up to float rounding)."""
    return z * scale + mean
