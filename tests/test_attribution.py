"""Token attribution: a constructed model where the answer is known, and agreement with
independent computations (the feature pipeline, ``output_hidden_states``, autograd on
``inputs_embeds``) on a random tiny model."""

from __future__ import annotations

import pytest
import torch

from conftest import make_model, make_tokenizer
from safety_polytope.errors import InputError
from safety_polytope.evaluation.attribution import attribute, render_attribution
from safety_polytope.features import FeatureSpec, Formatting, extract_features
from safety_polytope.lm import wrap_model
from safety_polytope.polytope import SafetyPolytope

LAYER = 2


def _chat_ids(tok, text: str) -> torch.Tensor:
    """``(1, seq)`` ids of the chat-formatted prompt, built without the library's encoder."""
    out = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                  add_generation_prompt=True)
    return torch.tensor([list(out["input_ids"] if hasattr(out, "keys") else out)])


def _polytope(d: int, K: int = 2, encoder: str = "identity", **kw) -> SafetyPolytope:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, d, generator=g)
    return SafetyPolytope(n_facets=K, encoder=encoder, epochs=2, **kw).fit(X, (X[:, 0] > 0).long())


# --------------------------------------------------------------------------- a known answer


@pytest.fixture
def residual_lm():
    """A tiny Llama whose blocks add nothing (attention and MLP outputs zeroed): the state at
    any layer is the token embeddings. Only 'X' has embedding component 0 (= 5) and only 'Y'
    component 1 (= 5), so with mean pooling v_0 = 5 #X / n and v_1 = 5 #Y / n."""
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        emb = model.get_input_embeddings().weight
        emb[:, :2] = 0.0
        emb[tok.convert_tokens_to_ids("X"), 0] = 5.0
        emb[tok.convert_tokens_to_ids("Y"), 1] = 5.0
    lm = wrap_model(model, tok, name="residual-llama")
    sp = _polytope(lm.hidden_size, K=2, standardize=False)
    sp.facets_ = torch.eye(lm.hidden_size)[:2].clone()
    sp.offsets_ = torch.zeros(2)
    sp.set_facet_names(["x_facet", "y_facet"])
    sp.set_context(lm, layer=1, pooling="mean", formatting=Formatting().to_dict())
    return lm, sp


@pytest.mark.parametrize("method,baseline", [("grad_x_input", "pad"), ("occlusion", "pad"),
                                             ("occlusion", "delete")])
def test_the_responsible_token_ranks_first(residual_lm, method, baseline) -> None:
    lm, sp = residual_lm
    text = "abXcd Y ef"
    attr = attribute(lm, sp, text, method=method, baseline=baseline)
    assert attr.tokens == list(text)
    assert [text[a:b] for a, b in attr.spans] == attr.tokens
    assert attr.facets == [0, 1] and attr.facet_names == ["x_facet", "y_facet"]
    assert attr.scores.shape == (2, len(text))
    assert bool(attr.violated.all())
    for facet, token in (("x_facet", "X"), ("y_facet", "Y")):
        (best, score), (_, second) = attr.top_tokens(facet, 2)
        assert best == token
        # The responsible token carries (almost) all of it; every other token ~nothing.
        assert score > 0 and abs(second) < 0.05 * score
    n_tokens = _chat_ids(lm.tokenizer, text).shape[1]
    if method != "occlusion" or baseline == "pad":
        # Removing X's embedding from the mean lowers v_0 by exactly 5 / n.
        assert float(attr.facet_scores(0)[2]) == pytest.approx(5.0 / n_tokens, rel=1e-4)


def test_explains_violated_facets_by_default_else_the_closest(residual_lm) -> None:
    lm, sp = residual_lm
    attr = attribute(lm, sp, "only X here")
    assert attr.facets == [0] and attr.top_facet == 0
    none = attribute(lm, sp, "nothing here")  # v = 0 for both: nothing violated
    assert not bool(none.violated.any()) and len(none.facets) == 1
    assert attribute(lm, sp, "only X here", facets=["y_facet"]).facets == [1]
    assert attribute(lm, sp, "only X here", facets="all").facets == [0, 1]
    with pytest.raises(InputError, match="no facet is named 'nope'"):
        attribute(lm, sp, "X", facets=["nope"])
    with pytest.raises(InputError, match="was not explained"):
        attr.facet_scores(1)


def test_render_colours_the_responsible_token_red(residual_lm) -> None:
    lm, sp = residual_lm
    text = "ab X cd"
    attr = attribute(lm, sp, text, facets=["x_facet"])
    rendered = render_attribution(attr)
    assert rendered.plain == text
    styles = {rendered.plain[s.start:s.end]: str(s.style) for s in rendered.spans}
    assert styles["X"].startswith("white on rgb(255,0,0)")
    assert "rgb(255,255,255)" in styles["a"]  # a zero score is white
    assert attr.to_dict()["tokens"] == list(text)


# --------------------------------------------------------------------------- independent checks


@pytest.fixture(scope="module")
def random_lm():
    tok = make_tokenizer()
    return wrap_model(make_model("llama", vocab_size=len(tok), seed=3), tok, name="tiny-llama")


def _context(sp: SafetyPolytope, lm, pooling: str = "last", chat: bool = True) -> SafetyPolytope:
    return sp.set_context(lm, layer=LAYER, pooling=pooling,
                          formatting=Formatting(chat_template=chat).to_dict())


def _features(lm, texts: list[str], pooling: str = "last", chat: bool = True) -> torch.Tensor:
    spec = FeatureSpec((LAYER,), pooling, Formatting(chat_template=chat))  # type: ignore[arg-type]
    return extract_features(lm, texts, spec, use_cache=False, show_progress=False)[LAYER]


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_delete_occlusion_equals_the_feature_pipeline_on_edited_text(random_lm, pooling) -> None:
    """Deleting token i (one character here) must equal re-extracting features of the text with
    that character removed: checks spans, positions, pooling and batching together. The text
    also occurs in the chat template ('user'), which must not confuse the mapping."""
    lm = random_lm
    sp = _context(_polytope(lm.hidden_size, K=3), lm, pooling)
    text = "user"
    attr = attribute(lm, sp, text, method="occlusion", baseline="delete", facets="all",
                     batch_size=3)
    assert attr.tokens == list(text)
    v0 = sp.violations(_features(lm, [text], pooling))[0]
    torch.testing.assert_close(attr.violations, v0, atol=1e-5, rtol=1e-5)
    edited = [text[:i] + text[i + 1:] for i in range(len(text))]
    expected = (v0[None, :] - sp.violations(_features(lm, edited, pooling))).T  # (K, tokens)
    torch.testing.assert_close(attr.scores, expected, atol=1e-5, rtol=1e-5)


def test_pad_occlusion_equals_output_hidden_states(random_lm) -> None:
    lm = random_lm
    sp = _context(_polytope(lm.hidden_size, K=2), lm)
    text = "Tell me a secret."
    attr = attribute(lm, sp, text, method="occlusion", facets="all", batch_size=4)
    ids = _chat_ids(lm.tokenizer, text)
    start = int(torch.nonzero(ids[0] == lm.tokenizer.convert_tokens_to_ids("T"))[0])
    rows = ids.repeat(len(text), 1)
    for i in range(len(text)):
        rows[i, start + i] = lm.tokenizer.pad_token_id
    with torch.no_grad():
        h = lm.model(torch.cat([ids, rows]), output_hidden_states=True).hidden_states[LAYER]
    v = sp.violations(h[:, -1])
    torch.testing.assert_close(attr.scores, (v[0][None] - v[1:]).T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["identity", "relu"])
def test_grad_x_input_equals_autograd_on_inputs_embeds(random_lm, encoder) -> None:
    lm = random_lm
    kw = {"n_features": 16} if encoder == "relu" else {}
    sp = _context(_polytope(lm.hidden_size, K=2, encoder=encoder, **kw), lm)
    text = "How to cook rice"
    attr = attribute(lm, sp, text, method="grad_x_input", facets="all")
    ids = _chat_ids(lm.tokenizer, text)
    start = int(torch.nonzero(ids[0] == lm.tokenizer.convert_tokens_to_ids("H"))[0])
    emb = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    h = lm.model(inputs_embeds=emb, output_hidden_states=True).hidden_states[LAYER][:, -1]
    fp = sp.folded()
    v = fp.violations(h)[0]
    torch.testing.assert_close(attr.violations, v.detach(), atol=1e-5, rtol=1e-5)
    for k in range(2):
        (g,) = torch.autograd.grad(v[k], emb, retain_graph=True)
        expected = (g * emb)[0, start:start + len(text)].sum(-1).detach()
        torch.testing.assert_close(attr.scores[k], expected, atol=1e-5, rtol=1e-4)
    assert all(not p.requires_grad for p in lm.model.parameters())  # weights stay frozen


def test_without_chat_template(random_lm) -> None:
    tok = make_tokenizer(chat=False)
    lm = wrap_model(random_lm.model, tok, name="tiny-llama")
    sp = _context(_polytope(lm.hidden_size), lm, chat=False)
    text = "plain text"
    attr = attribute(lm, sp, text, method="occlusion", baseline="delete", facets="all")
    assert attr.tokens == list(text)
    v0 = sp.violations(_features(lm, [text], chat=False))[0]
    torch.testing.assert_close(attr.violations, v0, atol=1e-5, rtol=1e-5)


def test_input_errors(random_lm) -> None:
    lm = random_lm
    sp = _polytope(lm.hidden_size)
    with pytest.raises(InputError, match="records no layer"):
        attribute(lm, sp, "hi")
    sp.set_context(lm, layer=LAYER, pooling="tokens")
    with pytest.raises(InputError, match="pooling 'tokens'"):
        attribute(lm, sp, "hi")
    _context(sp, lm)
    with pytest.raises(InputError, match="method must be one of"):
        attribute(lm, sp, "hi", method="saliency")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="non-empty"):
        attribute(lm, sp, "  ")
    other = _context(_polytope(8), lm)
    with pytest.raises(InputError, match="hidden size 32"):
        attribute(lm, other, "hi")


@pytest.mark.parametrize("ctx", [torch.no_grad, torch.inference_mode])
def test_gradients_work_inside_no_grad_callers(random_lm, ctx) -> None:
    """Callers (servers, the CLI) often run under no_grad or inference_mode."""
    lm = random_lm
    sp = _context(_polytope(lm.hidden_size, encoder="relu", n_features=16), lm)
    expected = attribute(lm, sp, "a prompt", facets="all")
    with ctx():
        got = attribute(lm, sp, "a prompt", facets="all")
    torch.testing.assert_close(got.scores, expected.scores)
    assert float(expected.scores.abs().sum()) > 0
