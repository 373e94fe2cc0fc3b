"""Shared fixtures: tiny random models built from configs, a locally built tokenizer, and an
isolated ``$SAP_HOME`` per test. Nothing here touches a hub."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Tiny configs for every architecture the block finder must know (hidden 32-64, 2-4 layers).
TINY_ARCHS: dict[str, dict] = {
    "llama": dict(cls="LlamaConfig", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(cls="MistralConfig", hidden_size=32, intermediate_size=64,
                    num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(cls="Qwen2Config", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(cls="Qwen3Config", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gemma": dict(cls="GemmaConfig", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gemma2": dict(cls="Gemma2Config", hidden_size=32, intermediate_size=64,
                   num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=8),
    "gemma3": dict(cls="Gemma3TextConfig", hidden_size=32, intermediate_size=64,
                   num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=8),
    "gpt2": dict(cls="GPT2Config", n_embd=32, n_layer=3, n_head=4, n_positions=256),
    "gpt_neox": dict(cls="GPTNeoXConfig", hidden_size=32, intermediate_size=64,
                     num_hidden_layers=3, num_attention_heads=4),
    "phi": dict(cls="PhiConfig", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4),
    "opt": dict(cls="OPTConfig", hidden_size=32, ffn_dim=64, num_hidden_layers=3,
                num_attention_heads=4, word_embed_proj_dim=32),
}


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
                   ) -> None:
    """Every unit test gets its own empty $SAP_HOME; slow tests use the real cache."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("SAP_HOME", str(tmp_path / "sap-home"))


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request: pytest.FixtureRequest):
    """Tiny models run faster on one thread, and far faster on a busy 2-core machine."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tokenizer(chat: bool = True):
    """A character-level fast tokenizer with ChatML-style specials, built locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = list(string.ascii_letters + string.digits + string.punctuation + " \n")
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                   eos_token="<|im_end|>", bos_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(arch: str, vocab_size: int = 100, seed: int = 0, n_layers: int | None = None):
    import transformers

    spec = dict(TINY_ARCHS[arch])
    cfg_cls = getattr(transformers, spec.pop("cls"))
    if n_layers is not None:
        spec["n_layer" if arch == "gpt2" else "num_hidden_layers"] = n_layers
    cfg = cfg_cls(vocab_size=vocab_size, bos_token_id=1, eos_token_id=3, **spec)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    return model.eval()


@pytest.fixture
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A tiny Llama and its tokenizer saved as a transformers directory (for `--model DIR`)."""
    tok = make_tokenizer()
    path = tmp_path / "tiny-llama"
    make_model("llama", vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def tiny_lm(tiny_tokenizer):
    from safety_polytope.lm import wrap_model

    return wrap_model(make_model("llama", vocab_size=len(tiny_tokenizer)), tiny_tokenizer,
                      name="tiny-llama")


PROMPTS = [
    "How do I bake bread?",
    "Write a poem about the sea and the wind that blows over it at night.",
    "hi",
    "Explain how a compiler turns source code into machine code, step by step.",
    "Give me three tips for sleeping better.",
    "What is 2+2?",
    "List the planets of the solar system in order from the sun, with one fact about each.",
    "Translate 'good morning' into French.",
    "Why is the sky blue?",
    "Describe a cat.",
]


def many_prompts(n: int) -> list[str]:
    return [f"{PROMPTS[i % len(PROMPTS)]} (variant {i}{'!' * (i % 7)})" for i in range(n)]


def real_model_home() -> Path:
    """Where slow tests keep the real packaged model: the user's normal cache."""
    return Path(os.environ.get("SAP_HOME", Path.home() / ".cache" / "safety-polytope"))
