"""Save extracted features next to the examples they came from (safetensors + JSON lines)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .._io import atomic_path
from .._version import __version__
from .cache import Features

FEATURES_FILE = "features.safetensors"
EXAMPLES_FILE = "examples.jsonl"
META_FILE = "meta.json"


def save_features(out_dir: str | Path, feats: Features, examples: Sequence[dict[str, Any]],
                  model: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write ``features.safetensors`` (``layer_L``, ``labels``, ``offsets``), ``examples.jsonl``
    and ``meta.json`` into ``out_dir``, atomically (the directory appears whole or not at all)."""
    tensors = {f"layer_{layer}": t.contiguous() for layer, t in feats.layers.items()}
    tensors["labels"] = torch.tensor([int(e.get("label", -1)) for e in examples])
    if feats.offsets is not None:
        tensors["offsets"] = feats.offsets
    meta = {"library_version": __version__, "model": model, "spec": feats.spec.to_dict(),
            "n": feats.n, "cache_key": feats.key, **(extra or {})}
    out = Path(out_dir)
    with atomic_path(out, is_dir=True) as tmp:
        save_file(tensors, str(tmp / FEATURES_FILE))
        with open(tmp / EXAMPLES_FILE, "w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out
