"""The fit pipeline on a tiny model and user data files: splits, decontamination, calibration on
plain and borderline harmless sets, refusal direction, artifact, detection and the CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_model, make_tokenizer
from safety_polytope.cli import app
from safety_polytope.datasets import Record
from safety_polytope.errors import InputError
from safety_polytope.lm import wrap_model
from safety_polytope.polytope import SafetyPolytope
from safety_polytope.training import (
    FitSettings,
    calibrate_two_sets,
    decontaminate,
    fit_pipeline,
    is_borderline,
)

HARM = ["bomb", "poison", "steal", "hack", "weapon", "fraud", "attack", "drugs"]
SAFE = ["bread", "poem", "garden", "music", "travel", "maths", "history", "cats"]


def _write_data(path, n=60, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({"prompt": f"tell me how to {rng.choice(HARM)} {rng.choice(HARM)} #{i}",
                     "label": 1, "category": "violence"})
        rows.append({"prompt": f"tell me about {rng.choice(SAFE)} and {rng.choice(SAFE)} #{i}",
                     "label": 0})
    for i in range(n // 3):
        rows.append({"prompt": f"how to kill a process {rng.choice(SAFE)} #{i}", "label": 0,
                     "category": "violence", "source": "harmless-twins"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _settings(data, **kw):
    base = dict(data=(str(data),), layer=2, n_facets=2, direction_prompts=6,
                max_new_tokens=6, batch_size=8, device="cpu")
    base.update(kw)
    return FitSettings(**base)


def test_decontaminate_removes_near_duplicates() -> None:
    a = Record("a", "how do I build a bomb at home quickly", 1, "weapons", "s")
    b = Record("b", "how do I build a bomb at home quickly please", 1, "weapons", "s")
    c = Record("c", "write a poem about autumn leaves", 0, "benign", "s")
    kept, n = decontaminate([a, c], [b])
    assert kept == [c] and n == 1


def test_calibrate_two_sets_meets_both_targets() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 6, generator=g)
    y = (X[:, 0] > 0.5).long()
    sp = SafetyPolytope(n_facets=2, epochs=5).fit(X, y)
    plain = torch.randn(300, 6, generator=g) - 1.0
    border = torch.randn(200, 6, generator=g) + 0.5  # looks more unsafe
    cal = calibrate_two_sets(sp, plain, border, 0.05, 0.15)
    assert cal["fpr_plain"] <= 0.05 and cal["fpr_borderline"] <= 0.15
    with pytest.raises(InputError, match="needs held-out plain harmless"):
        calibrate_two_sets(sp, plain[:0], border, 0.05, 0.15)


def test_fit_pipeline_on_tiny_model(tiny_model_dir, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = wrap_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok, name="tiny")
    data = _write_data(tmp_path / "d.jsonl")
    res = fit_pipeline(_settings(data), lm=lm)
    sp = res.polytope
    assert sp.context.layer == 2 and sp.context.model["hidden_size"] == 32
    assert sp.facets_.shape[0] == 2
    cal = sp.calibration_
    assert cal["fpr_plain"] <= 0.05 and cal["fpr_borderline"] <= 0.15
    assert cal["n_borderline"] > 0 and cal["n_plain"] > 0
    assert "refusal" in sp.steering.directions
    assert sp.steering.directions["refusal"].shape == (32,)
    assert sp.metrics_["decontamination"]["removed_near_duplicates_of_val_test"] >= 0
    # No test record (or close variant) is in training.
    train_ids = {r.id for r in res.train.records}
    assert not train_ids & {r.id for r in res.test.records}
    assert all(is_borderline(r) for r in res.train.records if r.source == "harmless-twins")


def test_one_class_data_is_refused(tiny_model_dir, tmp_path) -> None:
    data = tmp_path / "one.txt"
    data.write_text("\n".join(f"prompt number {i}" for i in range(30)) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["fit", "--model", str(tiny_model_dir), "--data", str(data),
                              "--out", str(tmp_path / "p")])
    assert res.exit_code == 2
    assert "only one class" in res.output or "label" in res.output


def test_cli_fit_then_detect(tiny_model_dir, tmp_path) -> None:
    data = _write_data(tmp_path / "d.jsonl")
    out = tmp_path / "poly"
    runner = CliRunner()
    res = runner.invoke(app, ["fit", "--model", str(tiny_model_dir), "--data", str(data), "--layer",
                              "2", "--facets", "2", "--out", str(out), "--direction-prompts",
                              "4", "--no-unseen", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (out / "config.json").exists() and (out / "polytope.safetensors").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["detection"]["test"]) == {"polytope", "single facet (K=1)",
                                                 "logistic probe", "MLP"}
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"prompt": "tell me how to bomb bomb"}\n{"text": "a poem"}\n')
    res = runner.invoke(app, ["detect", "--polytope", str(out), "--input", str(prompts),
                              "--output", str(tmp_path / "o.jsonl"), "--model",
                              str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["tell me how to bomb bomb", "a poem"]
    for r in rows:
        assert set(r) == {"text", "unsafe", "score", "facets"} and r["facets"]
        assert r["unsafe"] == (r["score"] > json.loads((out / "config.json").read_text())
                               ["calibration"]["threshold"])
    # A different model is refused, naming both.
    other = tmp_path / "other"
    tok = make_tokenizer()
    make_model("gpt2", vocab_size=len(tok)).save_pretrained(other)
    tok.save_pretrained(other)
    res = runner.invoke(app, ["detect", "--polytope", str(out), "--input", str(prompts),
                              "--model", str(other)])
    assert res.exit_code == 2 and "GPT2" in res.output and "Llama" in res.output


def test_cli_generate_off_and_steered(tiny_model_dir, tmp_path) -> None:
    data = _write_data(tmp_path / "d.jsonl")
    out = tmp_path / "poly"
    runner = CliRunner()
    res = runner.invoke(app, ["fit", "--model", str(tiny_model_dir), "--data", str(data),
                              "--layer", "2", "--facets", "2", "--out", str(out),
                              "--direction-prompts", "4", "--no-unseen", "--no-baselines"])
    assert res.exit_code == 0, res.output
    prompts = tmp_path / "in.txt"
    prompts.write_text("tell me how to bomb poison #1\ntell me about bread and music #2\n"
                       "tell me how to hack steal #3\n")
    results = {}
    for mode in ("off", "redirect", "detect"):
        o = tmp_path / f"{mode}.jsonl"
        res = runner.invoke(app, ["generate", "--polytope", str(out), "--input", str(prompts),
                                  "--output", str(o), "--mode", mode, "--max-new-tokens", "6",
                                  "--model", str(tiny_model_dir), "--strength", "5"])
        assert res.exit_code == 0, res.output
        results[mode] = [json.loads(x) for x in o.read_text().splitlines()]
    keys = {"prompt", "response", "steered", "steered_tokens", "first_trigger_token",
            "facets_triggered", "max_violation"}
    for rows in results.values():
        assert [r["prompt"][-2:] for r in rows] == ["#1", "#2", "#3"]
        assert all(set(r) == keys for r in rows)
    assert not any(r["steered"] for r in results["off"] + results["detect"])
    # Detect changes nothing; redirect changes only the rows it steered.
    assert [r["response"] for r in results["detect"]] == [r["response"] for r in results["off"]]
    for plain, steered in zip(results["off"], results["redirect"]):
        if not steered["steered"]:
            assert steered["response"] == plain["response"]
        else:
            assert steered["first_trigger_token"] == 0 and steered["facets_triggered"]
    res = runner.invoke(app, ["generate", "--polytope", str(out), "--input", str(prompts),
                              "--output", str(tmp_path / "x.jsonl"), "--mode", "warp",
                              "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "--mode must be one of" in res.output
