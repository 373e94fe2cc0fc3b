"""The on-disk feature cache: safetensors shards plus a JSON manifest, resumable and shareable.

A cache entry is a directory named by a key that hashes everything the features depend on (model
fingerprint and a digest of its weights, dtype, layers, pooling, formatting, and the texts). The
examples are cut into fixed shards in input order; each shard is written atomically, so an
interrupted run leaves only whole shards, and a rerun computes just the missing ones. Under
``torchrun`` each rank computes the shards ``i % world_size == rank`` and all ranks then read the
one shared cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from .._io import atomic_path, sap_home, write_json_atomic
from ..errors import InputError
from ..lm import LoadedModel
from ..progress import progress_bar
from .extract import FeatureSpec, extract_encoded
from .formatting import encode

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


@dataclass
class Features:
    """Extracted features, float32 on CPU.

    ``layers[L]`` is ``(n, d)`` for ``last``/``mean`` pooling, and ``(total_tokens, d)`` for
    ``tokens`` pooling, where example i owns rows ``offsets[i]:offsets[i+1]``.
    """

    layers: dict[int, Tensor]
    spec: FeatureSpec
    n: int
    offsets: Tensor | None = None
    key: str | None = None

    def __getitem__(self, layer: int) -> Tensor:
        try:
            return self.layers[layer]
        except KeyError:
            raise InputError(f"layer {layer} was not extracted; have {sorted(self.layers)}.")\
                from None

    def example(self, i: int, layer: int) -> Tensor:
        """Features of example i: ``(d,)``, or ``(n_tokens_i, d)`` for token pooling."""
        if self.offsets is None:
            return self[layer][i]
        return self[layer][self.offsets[i]:self.offsets[i + 1]]


def features_dir() -> Path:
    return sap_home() / "features"


def weights_digest(lm: LoadedModel) -> str:
    """A cheap digest of a sample of the weights, so two fine-tunes of one architecture differ."""
    h = hashlib.sha256()
    params = list(lm.model.parameters())
    for p in (params[0], params[len(params) // 2], params[-1]):
        h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def texts_digest(prompts: Sequence[str], responses: Sequence[str] | None) -> str:
    h = hashlib.sha256()
    for i, p in enumerate(prompts):
        h.update(p.encode("utf-8", "surrogatepass") + b"\x00")
        if responses is not None:
            h.update((responses[i] or "").encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return h.hexdigest()


def cache_key(lm: LoadedModel, spec: FeatureSpec, prompts: Sequence[str],
              responses: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
    desc = {
        "format": CACHE_FORMAT,
        "model": lm.fingerprint,
        "weights": weights_digest(lm),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "spec": spec.to_dict(),
        "texts": texts_digest(prompts, responses),
        "with_response": responses is not None,
        "n": len(prompts),
    }
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]
    return key, desc


def maybe_init_distributed() -> tuple[int, int]:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); return
    ``(rank, world_size)``. NCCL on CUDA, gloo otherwise."""
    import os

    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and \
            not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return _dist()


def _dist() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _dist()[1] > 1:
        torch.distributed.barrier()


def _shard_path(root: Path, i: int) -> Path:
    return root / f"shard-{i:05d}.safetensors"


def _load_shard(path: Path, key: str, i: int, start: int, stop: int) -> dict[str, Tensor] | None:
    """A finished shard, or None if absent or not the one we expect (then it is recomputed)."""
    if not path.exists():
        return None
    try:

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("key") != key or meta.get("start") != str(start) or \
                meta.get("stop") != str(stop):
            logger.warning("Ignoring %s: it belongs to another extraction", path.name)
            return None
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable shard %s (%s); recomputing it", path.name, exc)
        return None


def extract_features(
    lm: LoadedModel,
    prompts: Sequence[str],
    spec: FeatureSpec | None = None,
    *,
    responses: Sequence[str] | None = None,
    layers: Sequence[int] | int | None = None,
    batch_size: int = 16,
    padding_side: str = "right",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    shard_size: int = 256,
    show_progress: bool = True,
) -> Features:
    """Hidden states of ``prompts`` (plus optional ``responses``) at the requested layers.

    Either pass a ``FeatureSpec`` or just ``layers`` (last-token pooling, chat template on).
    Results are cached under ``cache_dir`` (default ``$SAP_HOME/features``); under
    ``torch.distributed`` the shards are split across ranks and every rank returns the full set.

    >>> feats = extract_features(lm, ["How do I bake bread?"], layers=[20])  # doctest: +SKIP
    >>> feats[20].shape  # doctest: +SKIP
    torch.Size([1, 576])
    """
    if spec is None:
        if layers is None:
            raise InputError("Pass either spec=FeatureSpec(...) or layers=[...].")
        spec = FeatureSpec(layers=tuple([layers] if isinstance(layers, int) else layers))
    if len(prompts) == 0:
        raise InputError("No prompts to extract features from; got an empty list.")
    if spec.pooling == "tokens" and responses is None:
        raise InputError("pooling='tokens' returns the states of response tokens, so it needs "
                         "responses=[...] (one per prompt).")
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1; got {shard_size}.")
    for layer in spec.layers:
        lm.check_layer(layer)
    context = getattr(lm.model.config, "max_position_embeddings", None)
    encoded = encode(lm.tokenizer, prompts, responses, spec.formatting, context)

    rank, world = _dist()
    key, desc = cache_key(lm, spec, prompts, responses)
    root = Path(cache_dir) if cache_dir is not None else features_dir()
    entry = root / key
    n = len(prompts)
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    if use_cache and rank == 0:
        write_json_atomic(entry / MANIFEST, {**desc, "shard_size": shard_size,
                                             "n_shards": len(bounds)})
    _barrier()

    shards: dict[int, dict[str, Tensor]] = {}
    todo: list[int] = []
    for i, (start, stop) in enumerate(bounds):
        loaded = _load_shard(_shard_path(entry, i), key, i, start, stop) if use_cache else None
        if loaded is not None:
            shards[i] = loaded
        elif i % world == rank:
            todo.append(i)
    if shards:
        logger.info("Feature cache %s: %d of %d shards already done", key, len(shards),
                    len(bounds))

    total = sum(bounds[i][1] - bounds[i][0] for i in todo)
    with progress_bar("Extracting features", total=total,
                      disable=not show_progress or rank != 0 or total == 0) as advance:
        for i in todo:
            start, stop = bounds[i]
            res = extract_encoded(lm, encoded[start:stop], spec, batch_size=batch_size,
                                  padding_side=padding_side, on_batch=advance)
            tensors = _pack(res, spec)
            if use_cache:
                meta = {"key": key, "shard": str(i), "start": str(start), "stop": str(stop)}
                with atomic_path(_shard_path(entry, i)) as tmp:
                    save_file(tensors, str(tmp), metadata=meta)
            shards[i] = tensors

    if world > 1:
        if not use_cache:
            raise InputError("Distributed extraction gathers through the cache; use_cache must "
                             "be True under torch.distributed.")
        _barrier()
        for i, (start, stop) in enumerate(bounds):
            if i not in shards:
                loaded = _load_shard(_shard_path(entry, i), key, i, start, stop)
                if loaded is None:
                    raise RuntimeError(f"shard {i} of {key} is missing after all ranks finished")
                shards[i] = loaded
    return _assemble(shards, len(bounds), spec, n, key if use_cache else None)


def _pack(res: dict[int, list[Tensor]], spec: FeatureSpec) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for layer, rows in res.items():
        if spec.pooling == "tokens":
            tensors[f"layer_{layer}"] = torch.cat(rows).contiguous() if rows else torch.empty(0)
        else:
            tensors[f"layer_{layer}"] = torch.stack(rows).contiguous()
    if spec.pooling == "tokens":
        first = res[spec.layers[0]]
        tensors["lengths"] = torch.tensor([r.shape[0] for r in first], dtype=torch.long)
    return tensors


def _assemble(shards: dict[int, dict[str, Tensor]], n_shards: int, spec: FeatureSpec, n: int,
              key: str | None) -> Features:
    parts = [shards[i] for i in range(n_shards)]
    layers = {layer: torch.cat([p[f"layer_{layer}"] for p in parts]) for layer in spec.layers}
    offsets = None
    if spec.pooling == "tokens":
        lengths = torch.cat([p["lengths"] for p in parts])
        offsets = torch.zeros(n + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
    return Features(layers=layers, spec=spec, n=n, offsets=offsets, key=key)
