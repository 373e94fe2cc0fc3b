"""The CLI is thin: check it wires arguments to the library and turns errors into messages."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from safety_polytope.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    """Tables are rendered for a wide terminal so cells are not folded."""
    from safety_polytope import cli

    monkeypatch.setattr(cli.console, "width", 250)


def test_models_lists_aliases() -> None:
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    assert "smollm2-135m-instruct" in res.output and "gemma3-270m" in res.output
    assert "Apache-2.0" in res.output


def test_extract_user_file(tiny_model_dir, tmp_path) -> None:
    data = tmp_path / "data.jsonl"
    rows = [{"prompt": f"harmful request {i}", "label": 1} for i in range(5)] + \
           [{"text": f"bake bread {i}", "label": 0, "response": "Sure."} for i in range(4)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "feats"
    res = runner.invoke(app, ["extract", "--model", str(tiny_model_dir), "--data", str(data),
                              "--layer", "1,2", "--out", str(out), "--pooling", "mean"])
    assert res.exit_code == 0, res.output
    tensors = load_file(str(out / "features.safetensors"))
    assert tensors["layer_1"].shape == (9, 32) and tensors["layer_2"].shape == (9, 32)
    assert tensors["labels"].tolist() == [1] * 5 + [0] * 4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["spec"]["layers"] == [1, 2] and meta["model"]["hidden_size"] == 32
    assert len((out / "examples.jsonl").read_text().splitlines()) == 9


def test_errors_are_one_line_messages(tiny_model_dir, tmp_path) -> None:
    data = tmp_path / "d.txt"
    data.write_text("one prompt\nanother\n")
    res = runner.invoke(app, ["extract", "--model", str(tiny_model_dir), "--data", str(data),
                              "--label", "1", "--layer", "7", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "layer 7 is out of range" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["extract", "--model", str(tmp_path / "nope.gguf"), "--data",
                              str(data), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not (tmp_path / "o").exists()


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "safety_polytope", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "extract" in out and "models" in out


def test_datasets_lists_counts_per_label_and_category() -> None:
    res = runner.invoke(app, ["datasets", "--sources", "harmless,harmless-twins"])
    assert res.exit_code == 0, res.output
    assert "harmless-twins" in res.output and "524" in res.output and "191" in res.output
    res = runner.invoke(app, ["datasets", "--sources", "nope"])
    assert res.exit_code == 2 and "nope" in res.output
