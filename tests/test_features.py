"""Feature extraction against independent computations: plain forwards, full forwards, cache."""

from __future__ import annotations

import pytest
import torch

from conftest import PROMPTS, make_model, make_tokenizer, many_prompts
from safety_polytope.errors import InputError
from safety_polytope.features import FeatureSpec, Formatting, encode, extract_features
from safety_polytope.features.extract import extract_encoded
from safety_polytope.lm import wrap_model

ARCHS = ["llama", "gpt2", "gpt_neox", "qwen2", "gemma2"]


def _lm(arch: str):
    tok = make_tokenizer()
    return wrap_model(make_model(arch, vocab_size=len(tok)), tok, name=f"tiny-{arch}")


def _reference(lm, prompts, layers, pooling, responses=None):
    """One unpadded example at a time, full forward with output_hidden_states=True."""
    enc = encode(lm.tokenizer, prompts, responses)
    out = {layer: [] for layer in layers}
    for e in enc:
        with torch.no_grad():
            hs = lm.model(input_ids=torch.tensor([e.ids]), output_hidden_states=True).hidden_states
        for layer in layers:
            h = hs[layer][0]
            out[layer].append(h[-1] if pooling == "last" else
                              h.mean(0) if pooling == "mean" else h[e.response_start:])
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_features_match_plain_forward(arch: str, pooling: str) -> None:
    lm = _lm(arch)
    prompts = many_prompts(40)
    ref = _reference(lm, prompts, (1, 2), pooling)
    for batch_size in (1, 7, 32):
        for side in ("left", "right"):
            feats = extract_features(lm, prompts, FeatureSpec((1, 2), pooling), use_cache=False,
                                     batch_size=batch_size, padding_side=side,
                                     show_progress=False)
            for layer in (1, 2):
                diff = (feats[layer] - torch.stack(ref[layer])).abs().max().item()
                assert diff <= 1e-5, (arch, pooling, batch_size, side, layer, diff)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_token_features_match_plain_forward(arch: str) -> None:
    lm = _lm(arch)
    prompts = PROMPTS[:6]
    responses = ["Sure, here it is.", "No.", "", "Step one: read.", "Sleep.", "Four"]
    ref = _reference(lm, prompts, (2,), "tokens", responses)
    for side in ("left", "right"):
        feats = extract_features(lm, prompts, FeatureSpec((2,), "tokens"), responses=responses,
                                 use_cache=False, batch_size=4, padding_side=side,
                                 show_progress=False)
        assert feats.offsets is not None and feats.offsets[-1] == feats[2].shape[0]
        for i in range(len(prompts)):
            got = feats.example(i, 2)
            assert got.shape == ref[2][i].shape
            assert got.shape[0] == len(lm.tokenizer(responses[i])["input_ids"])
            assert (got - ref[2][i]).abs().max().item() <= 1e-5 if got.numel() else True


def test_early_exit_is_bit_identical_and_skips_upper_blocks() -> None:
    lm = _lm("llama")
    prompts = many_prompts(9)
    enc = encode(lm.tokenizer, prompts)
    ran = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
               for i, b in enumerate(lm.blocks)]
    early = extract_encoded(lm, enc, FeatureSpec((1,), "last"), batch_size=4)
    assert set(ran) == {0}  # blocks 2 and 3 never ran
    for h in handles:
        h.remove()
    # Same batches, full forward (no early exit), states read from output_hidden_states.
    full = []
    for e in enc:
        with torch.no_grad():
            hs = lm.model(input_ids=torch.tensor([e.ids]), output_hidden_states=True).hidden_states
        full.append(hs[1][0, -1])
    single = extract_encoded(lm, enc, FeatureSpec((1,), "last"), batch_size=1)
    for a, b in zip(single[1], full):
        assert torch.equal(a, b)
    assert len(early[1]) == 9


def test_several_layers_in_one_pass() -> None:
    lm = _lm("qwen2")
    calls = []
    h = lm.model.register_forward_hook(lambda *a: calls.append(1))
    h2 = lm.model.register_forward_pre_hook(lambda *a: calls.append(0))
    feats = extract_features(lm, PROMPTS, layers=[1, 2, 3], use_cache=False, batch_size=16,
                             show_progress=False)
    h.remove(), h2.remove()
    assert calls == [0]  # one forward, stopped early (post-hook never fired)
    assert set(feats.layers) == {1, 2, 3}
    assert feats[3].shape == (len(PROMPTS), 32)


def test_chat_template_switch_and_system_prompt() -> None:
    lm = _lm("llama")
    with_chat = encode(lm.tokenizer, ["hi"])[0].ids
    plain = encode(lm.tokenizer, ["hi"], fmt=Formatting(chat_template=False))[0].ids
    system = encode(lm.tokenizer, ["hi"], fmt=Formatting(system_prompt="Be nice."))[0].ids
    assert len(plain) == 2 and len(with_chat) > len(plain) and len(system) > len(with_chat)
    assert "".join(lm.tokenizer.convert_ids_to_tokens(with_chat)).endswith(
        "<|im_start|>assistant\n")


def test_cache_resume_after_interrupt(tmp_path, monkeypatch) -> None:
    lm = _lm("llama")
    prompts = many_prompts(50)
    spec = FeatureSpec((2,), "last")
    from safety_polytope.features import cache as cache_mod

    calls = {"n": 0}
    real = cache_mod.extract_encoded

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third shard
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "extract_encoded", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_features(lm, prompts, spec, cache_dir=tmp_path, shard_size=10,
                         show_progress=False)
    entry = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert sorted(p.name for p in entry.glob("shard-*")) == \
        ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not [p for p in entry.iterdir() if p.name.startswith(".")]  # no half-written file

    forwards = []
    handle = lm.blocks[0].register_forward_pre_hook(lambda m, a: forwards.append(a[0].shape[0]))
    monkeypatch.setattr(cache_mod, "extract_encoded", real)
    resumed = extract_features(lm, prompts, spec, cache_dir=tmp_path, shard_size=10,
                               batch_size=10, show_progress=False)
    assert sum(forwards) == 30  # only the three missing shards were computed
    forwards.clear()
    again = extract_features(lm, prompts, spec, cache_dir=tmp_path, shard_size=10,
                             show_progress=False)
    assert forwards == []  # fully cached
    handle.remove()
    fresh = extract_features(lm, prompts, spec, use_cache=False, shard_size=10,
                             show_progress=False)
    assert torch.equal(resumed[2], fresh[2]) and torch.equal(again[2], fresh[2])


def test_cache_ignores_foreign_or_corrupt_shards(tmp_path) -> None:
    lm = _lm("llama")
    spec = FeatureSpec((1,), "mean")
    feats = extract_features(lm, PROMPTS, spec, cache_dir=tmp_path, shard_size=4,
                             show_progress=False)
    entry = tmp_path / feats.key
    (entry / "shard-00001.safetensors").write_bytes(b"garbage")
    again = extract_features(lm, PROMPTS, spec, cache_dir=tmp_path, shard_size=4,
                             show_progress=False)
    assert torch.equal(feats[1], again[1])


def test_cache_key_depends_on_inputs(tmp_path) -> None:
    lm = _lm("llama")
    a = extract_features(lm, PROMPTS, layers=[1], cache_dir=tmp_path, show_progress=False)
    b = extract_features(lm, PROMPTS[::-1], layers=[1], cache_dir=tmp_path, show_progress=False)
    c = extract_features(lm, PROMPTS, FeatureSpec((1,), "mean"), cache_dir=tmp_path,
                         show_progress=False)
    d = extract_features(lm, PROMPTS, FeatureSpec((1,), formatting=Formatting(False)),
                         cache_dir=tmp_path, show_progress=False)
    assert len({a.key, b.key, c.key, d.key}) == 4
    assert torch.equal(a[1], b[1].flip(0))


def test_bad_input_messages() -> None:
    lm = _lm("llama")
    with pytest.raises(InputError, match="out of range: tiny-llama has 3 decoder blocks"):
        extract_features(lm, PROMPTS, layers=[4], use_cache=False)
    with pytest.raises(InputError, match="empty list"):
        extract_features(lm, [], layers=[1])
    with pytest.raises(InputError, match="prompt #1 is empty"):
        extract_features(lm, ["ok", "  "], layers=[1], use_cache=False)
    with pytest.raises(InputError, match="needs responses"):
        extract_features(lm, PROMPTS, FeatureSpec((1,), "tokens"))
    with pytest.raises(InputError, match="pooling must be one of last, mean, tokens"):
        FeatureSpec((1,), "max")
    with pytest.raises(InputError, match=r"example #0 is \d+ tokens long, over the limit of 5"):
        extract_features(lm, ["a long prompt"], FeatureSpec((1,), formatting=Formatting(
            max_length=5)), use_cache=False)
    with pytest.raises(InputError, match="2 prompts but 1 responses"):
        encode(lm.tokenizer, ["a", "b"], ["x"])
    with pytest.raises(InputError, match="padding_side must be"):
        extract_features(lm, PROMPTS, layers=[1], use_cache=False, padding_side="middle")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_give_float32_features(dtype) -> None:
    lm = _lm("llama")
    lm.model.to(dtype)
    feats = extract_features(lm, PROMPTS[:3], layers=[2], use_cache=False, show_progress=False)
    assert feats[2].dtype == torch.float32 and torch.isfinite(feats[2]).all()
