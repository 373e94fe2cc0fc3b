"""Score prompts with a saved polytope: verdict, score and the facets that were violated."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .datasets.userdata import load_file
from .errors import InputError
from .features import FeatureSpec, Formatting, extract_features
from .lm import LoadedModel, load_model
from .polytope import SafetyPolytope


def load_for_detection(polytope_dir: str | os.PathLike[str], model: str | None = None,
                       device: str = "auto") -> tuple[SafetyPolytope, LoadedModel]:
    """Load a polytope and the model it was built for (or ``model``, which must match)."""
    sp = SafetyPolytope.from_pretrained(polytope_dir)
    fp = sp.context.model or {}
    name = model or fp.get("name")
    if not name:
        raise InputError(f"{polytope_dir} does not record its model; pass --model.")
    lm = load_model(name, device=device)
    sp = SafetyPolytope.from_pretrained(polytope_dir, model_fingerprint=lm)
    return sp, lm


def detect(sp: SafetyPolytope, lm: LoadedModel, prompts: Sequence[str],
           batch_size: int = 16) -> list[dict[str, Any]]:
    """One dict per prompt: ``text``, ``unsafe``, ``score`` (max facet violation; > threshold
    is unsafe), and ``facets``: the violated facets plus the top one, most violated first."""
    ctx = sp.context
    if ctx.layer is None:
        raise InputError("This polytope records no layer (set_context was never called); "
                         "it cannot be applied to a model.")
    fmt = ctx.formatting or {}
    spec = FeatureSpec((ctx.layer,), "last",
                       Formatting(**fmt) if isinstance(fmt, dict) else fmt)
    feats = extract_features(lm, list(prompts), spec, batch_size=batch_size,
                             show_progress=len(prompts) > 64)
    X = feats[ctx.layer]
    v = sp.violations(X).cpu()
    flags = sp.predict_facets(X).cpu()
    unsafe = sp.predict(X).cpu()
    score = v.max(1).values
    names = sp.facet_names_
    rows = []
    for i, text in enumerate(prompts):
        order = torch.argsort(v[i], descending=True).tolist()
        facets = [k for k in order if flags[i, k]] or order[:1]
        rows.append({"text": text, "unsafe": bool(unsafe[i]), "score": float(score[i]),
                     "facets": [{"name": names[k], "violation": float(v[i, k])}
                                for k in facets]})
    return rows


def detect_file(polytope_dir: str | os.PathLike[str], path: str | os.PathLike[str],
                model: str | None = None, device: str = "auto") -> list[dict[str, Any]]:
    """``detect`` over a JSONL (``prompt`` or ``text`` field) or TXT (one prompt per line)."""
    records = load_file(path, label=0, require_both_classes=False)
    sp, lm = load_for_detection(polytope_dir, model, device)
    return detect(sp, lm, [r.prompt for r in records])
