"""The steering hook on a tiny random model: latched per row, bit-identical where nothing
triggers, exact restore on detach, hooks removed on error, audit events."""

from __future__ import annotations

import pytest
import torch

from conftest import make_model, make_tokenizer
from safety_polytope.errors import InputError
from safety_polytope.features import FeatureSpec, extract_features
from safety_polytope.generation import generate_ids
from safety_polytope.lm import wrap_model
from safety_polytope.polytope import SafetyPolytope
from safety_polytope.steering.hook import attach, steer

UNSAFE = ["how to build a bomb", "make poison now", "steal a car fast", "hack the bank"]
SAFE = ["bake some bread", "a poem on the sea", "plant tomatoes", "learn french words"]


@pytest.fixture
def setup():
    tok = make_tokenizer()
    lm = wrap_model(make_model("llama", vocab_size=len(tok), n_layers=4), tok, name="tiny")
    prompts = UNSAFE + SAFE
    X = extract_features(lm, prompts, FeatureSpec((2,)), use_cache=False,
                         show_progress=False)[2]
    y = torch.tensor([1] * 4 + [0] * 4)
    sp = SafetyPolytope(n_facets=2, epochs=60).fit(X, y)
    # Threshold between the classes' scores, so exactly the unsafe prompts are flagged.
    s = sp.decision_function(X)
    thr = float((s[:4].min() + s[4:].max()) / 2)
    sp.threshold_ = thr
    sp.facet_thresholds_ = torch.full_like(sp.facet_thresholds_, thr)
    assert sp.predict(X).tolist() == y.tolist()
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(32, generator=g) * 50.0
    sp.set_context(model=lm, layer=2, pooling="last")
    sp.set_steering(layer=2, default_mode="redirect", directions={"refusal": direction})
    return lm, sp, prompts


def _gen(lm, prompts):
    return generate_ids(lm, prompts, max_new_tokens=8, batch_size=8, show_progress=False)


def test_unflagged_rows_bit_identical_flagged_rows_change(setup) -> None:
    lm, sp, prompts = setup
    plain = _gen(lm, prompts)
    with steer(lm, sp, "redirect") as h:
        steered = _gen(lm, prompts)
        flagged = h.flagged.tolist()
    assert sum(flagged) == 4  # rows are in the batch order generate_ids chose (by length)
    for i in range(4, 8):
        assert steered[i] == plain[i]
    assert sum(steered[i] != plain[i] for i in range(4)) >= 3
    # Detached: the model is exactly restored.
    assert _gen(lm, prompts) == plain
    assert not lm.blocks[1]._forward_hooks


def test_batch_rows_match_single_rows(setup) -> None:
    lm, sp, prompts = setup
    with steer(lm, sp, "redirect"):
        batched = _gen(lm, prompts)
        singles = [_gen(lm, [p])[0] for p in prompts]
    assert batched == singles


def test_detect_mode_changes_nothing_and_records_events(setup) -> None:
    lm, sp, prompts = setup
    plain = _gen(lm, prompts)
    with steer(lm, sp, "detect") as h:
        out = _gen(lm, prompts)
    assert out == plain
    events = h.events()
    assert len(events) == 4 and len({e.row for e in events}) == 4
    assert all(e.position == 0 and e.facets and e.action == "detect" for e in events)


def test_redirect_events_cover_every_decoded_token(setup) -> None:
    lm, sp, prompts = setup
    with steer(lm, sp, "redirect") as h:
        generate_ids(lm, prompts[:2] + prompts[4:6], max_new_tokens=5, batch_size=4,
                     show_progress=False)
    events = h.events()
    assert len({e.row for e in events}) == 2
    assert all(e.correction_norm > 0 for e in events)
    assert max(e.position for e in events) >= 3


def test_hooks_removed_when_generation_raises(setup) -> None:
    lm, sp, prompts = setup
    with pytest.raises(RuntimeError, match="boom"):
        with steer(lm, sp, "redirect"):
            raise RuntimeError("boom")
    assert all(not b._forward_hooks for b in lm.blocks)


def test_attach_refusals(setup) -> None:
    lm, sp, _ = setup
    with pytest.raises(InputError, match="mode must be one of"):
        attach(lm, sp, "teleport")
    sp.set_steering(layer=2, directions={})
    with pytest.raises(InputError, match="needs the polytope's learned refusal direction"):
        attach(lm, sp, "redirect")
    assert all(not b._forward_hooks for b in lm.blocks)


@pytest.mark.parametrize("mode", ["project", "safeflow"])
def test_solver_modes_move_only_flagged_rows(setup, mode) -> None:
    lm, sp, prompts = setup
    plain = _gen(lm, prompts)
    opts = {"margin": 1.0} if mode == "project" else {"steps": 5, "lr": 0.5}
    with steer(lm, sp, mode, **opts) as h:
        out = _gen(lm, prompts)
    for i in range(4, 8):
        assert out[i] == plain[i]
    events = h.events()
    assert len({e.row for e in events}) == 4
    assert all(e.correction_norm > 0 for e in events if e.position == 0)
    if mode == "project":  # after projection every facet holds with the margin
        assert all(e.violation_after <= -1.0 + 1e-3 for e in events)
