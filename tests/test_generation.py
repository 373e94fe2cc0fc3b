"""Batched generation: left padding changes nothing, order is kept, sampling is seeded, stops
at the end-of-turn token, and the prompt ids are exactly those the features see."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
import torch

from conftest import PROMPTS, make_model, make_tokenizer
from safety_polytope.errors import InputError
from safety_polytope.features.formatting import Formatting, encode
from safety_polytope.generation import generate_batch, generate_ids, stop_token_ids
from safety_polytope.lm import wrap_model

N_NEW = 10


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run ~30x faster on one thread when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _lm(arch: str = "llama", seed: int = 0):
    tok = make_tokenizer()
    return wrap_model(make_model(arch, vocab_size=len(tok), seed=seed), tok, name=f"tiny-{arch}")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_left_padded_batch_equals_each_row_alone(arch: str) -> None:
    lm = _lm(arch)
    batched = generate_ids(lm, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False)
    alone = [generate_ids(lm, [p], max_new_tokens=N_NEW, show_progress=False)[0]
             for p in PROMPTS]
    assert batched == alone
    assert all(len(row) > 0 for row in batched)
    # The prompts do differ in length, so the batches really were padded.
    assert len({len(e.ids) for e in encode(lm.tokenizer, PROMPTS)}) > 3


def test_input_order_preserved(tiny_lm) -> None:
    out = generate_batch(tiny_lm, PROMPTS, max_new_tokens=6, batch_size=3, show_progress=False)
    order = list(range(len(PROMPTS)))
    random.Random(1).shuffle(order)
    shuffled = generate_batch(tiny_lm, [PROMPTS[i] for i in order], max_new_tokens=6,
                              batch_size=3, show_progress=False)
    assert shuffled == [out[i] for i in order]
    assert len({tuple(r) for r in out}) > 1  # not one constant output that would hide a mix-up


def test_prompt_ids_are_the_feature_ids_left_padded(tiny_lm, monkeypatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = tiny_lm.model.generate

    def spy(**kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))
        return real(**kwargs)

    monkeypatch.setattr(tiny_lm.model, "generate", spy)
    fmt = Formatting(system_prompt="Be brief.")
    generate_ids(tiny_lm, PROMPTS[:5], max_new_tokens=2, batch_size=8, formatting=fmt,
                 show_progress=False)
    (ids, mask), = seen
    rows = {tuple(ids[r][mask[r].bool()].tolist()) for r in range(ids.shape[0])}
    assert rows == {tuple(e.ids) for e in encode(tiny_lm.tokenizer, PROMPTS[:5], fmt=fmt)}
    assert (mask[:, -1] == 1).all()  # left padding: every row ends at the last column
    assert tiny_lm.tokenizer.padding_side == "right"  # the user's tokenizer is untouched


def test_seeded_sampling_is_reproducible_and_leaves_global_rng(tiny_lm) -> None:
    kw = {"max_new_tokens": 8, "batch_size": 4, "temperature": 1.0, "top_p": 0.95,
          "show_progress": False}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = generate_ids(tiny_lm, PROMPTS, seed=7, **kw)
    assert torch.equal(torch.rand(3), expected_next)
    assert generate_ids(tiny_lm, PROMPTS, seed=7, **kw) == a
    assert generate_ids(tiny_lm, PROMPTS, seed=8, **kw) != a
    assert generate_ids(tiny_lm, PROMPTS, max_new_tokens=8, batch_size=4,
                        show_progress=False) != a  # sampling is not greedy


def test_greedy_ignores_the_models_generation_config(tiny_lm) -> None:
    base = generate_ids(tiny_lm, PROMPTS[:4], max_new_tokens=N_NEW, show_progress=False)
    g = tiny_lm.model.generation_config
    g.do_sample, g.temperature, g.top_k, g.repetition_penalty = True, 0.5, 3, 1.5
    g.no_repeat_ngram_size = 2
    assert generate_ids(tiny_lm, PROMPTS[:4], max_new_tokens=N_NEW, show_progress=False) == base


def test_stops_at_end_token_and_decodes_only_new_tokens(tiny_lm) -> None:
    base = generate_ids(tiny_lm, PROMPTS, max_new_tokens=12, batch_size=4, show_progress=False)
    # Declare a token the model emits mid-reply to be the end-of-turn token.
    row = base[0]
    stop = next(t for j, t in enumerate(row) if j >= 3 and t not in row[:j])
    tiny_lm.model.generation_config.eos_token_id = [tiny_lm.tokenizer.eos_token_id, stop]
    cut = generate_ids(tiny_lm, PROMPTS, max_new_tokens=12, batch_size=4, show_progress=False)
    for full, short in zip(base, cut):
        end = full.index(stop) if stop in full else len(full)
        assert short == full[:end]
    assert len(cut[0]) == row.index(stop) >= 3
    texts = generate_batch(tiny_lm, PROMPTS, max_new_tokens=12, batch_size=4,
                           show_progress=False)
    assert texts == [tiny_lm.tokenizer.decode(r, skip_special_tokens=True).strip() for r in cut]


def test_stop_tokens_include_the_chat_end_token() -> None:
    tok = make_tokenizer()
    tok.eos_token = "<|endoftext|>"
    lm = wrap_model(make_model("llama", vocab_size=len(tok)), tok, name="tiny")
    lm.model.generation_config.eos_token_id = None
    ids = stop_token_ids(lm)
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids
    assert tok.convert_tokens_to_ids("<|endoftext|>") in ids


def test_bad_settings_are_rejected(tiny_lm) -> None:
    with pytest.raises(InputError, match="max_new_tokens must be an int >= 1; got 0"):
        generate_batch(tiny_lm, ["hi"], max_new_tokens=0)
    with pytest.raises(InputError, match="temperature must be >= 0"):
        generate_batch(tiny_lm, ["hi"], temperature=-1.0)
    with pytest.raises(InputError, match=r"top_p must be in \(0, 1\]"):
        generate_batch(tiny_lm, ["hi"], top_p=0.0)
    with pytest.raises(InputError, match="prompt #1 is empty"):
        generate_batch(tiny_lm, ["hi", " "], show_progress=False)
    assert generate_batch(tiny_lm, []) == []


@pytest.mark.slow
def test_real_model_complies_with_some_harmful_prompts() -> None:
    from safety_polytope.datasets import load_source
    from safety_polytope.lm import load_model
    from safety_polytope.refusal import is_refusal

    lm = load_model("smollm2-135m-instruct", device="cpu")
    prompts = [r.prompt for r in load_source("advbench")[:8]]
    start = time.perf_counter()
    out = generate_batch(lm, prompts, max_new_tokens=32, batch_size=8, show_progress=False)
    assert time.perf_counter() - start < 60
    assert len(out) == 8 and all(isinstance(t, str) and t.strip() for t in out)
    assert not any("<|im_end|>" in t or "<|im_start|>" in t for t in out)
    assert sum(not is_refusal(t) for t in out) >= 3  # SmolLM2-135M complies with most
