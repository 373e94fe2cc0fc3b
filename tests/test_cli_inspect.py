"""``sap inspect`` on a tiny saved polytope: the facet table, the heatmap, token attribution."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import safety_polytope.cli.inspect  # noqa: F401  (registers the command)
from conftest import make_model, make_tokenizer
from safety_polytope.cli import app
from safety_polytope.evaluation.facets import apply_facet_names, facet_table
from safety_polytope.features import FeatureSpec, Formatting, extract_features
from safety_polytope.lm import load_model
from safety_polytope.polytope import SafetyPolytope

runner = CliRunner()
CATS = ["weapons", "drugs"]


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    from safety_polytope import cli

    monkeypatch.setattr(cli.console, "width", 250)


@pytest.fixture
def saved_polytope(tiny_model_dir, tmp_path):
    """A K=2 polytope on layer-2 features of the tiny model, with its facet table stored."""
    lm = load_model(str(tiny_model_dir), device="cpu")
    texts = [f"how to get {w} number {i}" for i, w in enumerate(["guns", "pills"] * 12)] + \
            [f"bake bread {i}" for i in range(24)]
    cats = CATS * 12 + ["benign"] * 24
    y = torch.tensor([1] * 24 + [0] * 24)
    spec = FeatureSpec((2,), "last", Formatting())
    X = extract_features(lm, texts, spec, use_cache=False, show_progress=False)[2]
    sp = SafetyPolytope(n_facets=2, encoder="identity", epochs=5).fit(X, y, cats)
    sp.set_context(lm, layer=2, pooling="last", formatting=spec.formatting)
    rows = facet_table(sp, X, y, cats, texts)
    apply_facet_names(sp, rows)
    out = sp.save_pretrained(tmp_path / "polytope")
    return out, rows


def test_inspect_prints_the_stored_table_and_writes_a_png(saved_polytope, tmp_path) -> None:
    path, rows = saved_polytope
    png = tmp_path / "plots" / "mi.png"
    res = runner.invoke(app, ["inspect", "--polytope", str(path), "--heatmap", str(png)])
    assert res.exit_code == 0, res.output
    for col in ("name", "category", "MI (bits)", "purity", "chance", "unsafe share"):
        assert col in res.output
    for r in rows:
        assert r.name in res.output
        assert f"{r.share:.0%}" in res.output
    assert "layer 2 of tiny-llama" in res.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_inspect_text_prints_token_attribution(saved_polytope, tiny_model_dir) -> None:
    path, _ = saved_polytope
    for method in ("occlusion", "grad_x_input"):
        res = runner.invoke(app, ["inspect", "--polytope", str(path), "--text", "guns Z",
                                  "--model", str(tiny_model_dir), "--method", method,
                                  "--device", "cpu"])
        assert res.exit_code == 0, res.output
        assert "Violations of 'guns Z'" in res.output
        assert "Top 8 tokens per explained facet" in res.output
        assert "'Z'" in res.output and method in res.output


def test_inspect_refuses_a_different_model(saved_polytope, tmp_path) -> None:
    path, _ = saved_polytope
    tok = make_tokenizer()
    other = tmp_path / "other"
    make_model("llama", vocab_size=len(tok), n_layers=2).save_pretrained(other)
    tok.save_pretrained(other)
    res = runner.invoke(app, ["inspect", "--polytope", str(path), "--text", "hi",
                              "--model", str(other), "--device", "cpu"])
    assert res.exit_code == 2
    assert "was built for" in res.output and "num_layers" in res.output


def test_inspect_without_a_stored_table(tiny_model_dir, tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 32, generator=g)
    sp = SafetyPolytope(n_facets=2, encoder="identity", epochs=2).fit(X, (X[:, 0] > 0).long())
    path = sp.save_pretrained(tmp_path / "bare")
    res = runner.invoke(app, ["inspect", "--polytope", str(path)])
    assert res.exit_code == 0, res.output
    assert "stores no facet table" in res.output
    res = runner.invoke(app, ["inspect", "--polytope", str(path), "--heatmap",
                              str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "facet_table" in res.output
    res = runner.invoke(app, ["inspect", "--polytope", str(path), "--text", "hi"])
    assert res.exit_code == 2 and "records no model name" in res.output
