"""Model loading helpers: block discovery on every architecture, layers, devices, pad tokens."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY_ARCHS, make_model, make_tokenizer
from safety_polytope.errors import InputError, ModelError
from safety_polytope.lm import (
    check_layer,
    find_blocks,
    fingerprint,
    resolve_device,
    resolve_dtype,
    resolve_model,
    wrap_model,
)

EXPECTED_PATHS = {
    "llama": "model.layers", "mistral": "model.layers", "qwen2": "model.layers",
    "qwen3": "model.layers", "gemma": "model.layers", "gemma2": "model.layers",
    "gemma3": "model.layers", "gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers",
    "phi": "model.layers", "opt": "model.decoder.layers",
}


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_find_blocks_every_architecture(arch: str) -> None:
    model = make_model(arch)
    path, blocks = find_blocks(model)
    assert path == EXPECTED_PATHS[arch]
    assert len(blocks) == 3
    # The blocks found are the ones whose outputs are hidden_states[1..n-1].
    captured = []
    handle = blocks[0].register_forward_hook(
        lambda m, a, o: captured.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6, 7, 8]]), output_hidden_states=True)
    handle.remove()
    assert torch.allclose(captured[0], out.hidden_states[1], atol=1e-6)


class _Odd(nn.Module):
    """An unknown architecture: blocks live under an unusual name, next to another list."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.ModuleDict({"stages": nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])})
        self.heads = nn.ModuleList([nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1)])


class _Ambiguous(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.b = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])


def test_find_blocks_guess_and_override() -> None:
    path, blocks = find_blocks(_Odd())
    assert path == "trunk.stages" and len(blocks) == 3
    path, blocks = find_blocks(_Odd(), override="heads")
    assert path == "heads"


def test_find_blocks_unknown_architecture_says_how_to_override() -> None:
    with pytest.raises(ModelError, match=r"ModuleLists seen: a \(2\), b \(2\).*blocks='path"):
        find_blocks(_Ambiguous())
    with pytest.raises(ModelError, match="does not name a non-empty nn.ModuleList"):
        find_blocks(_Odd(), override="trunk.nothing")


@pytest.mark.parametrize("layer", [0, 4, -1, 2.0, True])
def test_layer_out_of_range(layer) -> None:
    with pytest.raises(InputError, match=r"out of range: m has 3 decoder blocks.*1\.\.3"):
        check_layer(layer, 3, "m")


def test_pad_token_added_when_missing() -> None:
    tok = make_tokenizer()
    assert tok.pad_token is None
    lm = wrap_model(make_model("llama", vocab_size=len(tok)), tok)
    assert lm.tokenizer.pad_token == "<|im_end|>"
    assert lm.tokenizer.pad_token_id == lm.tokenizer.eos_token_id


def test_fingerprint_and_device_dtype() -> None:
    fp = fingerprint(make_model("gpt2"), "tiny")
    assert fp == {"name": "tiny", "architecture": "GPT2LMHeadModel", "model_type": "gpt2",
                  "hidden_size": 32, "num_layers": 3, "vocab_size": 100}
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(InputError, match="dtype must be auto"):
        resolve_dtype("float8")
    with pytest.raises(InputError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_resolve_model_paths(tmp_path) -> None:
    with pytest.raises(InputError, match="holds no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(InputError, match="GGUF file .* does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")[1] == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = make_model("qwen2")
    model.save_pretrained(tmp_path / "m")
    assert resolve_model(str(tmp_path / "m")) == ("m", str(tmp_path / "m"))
