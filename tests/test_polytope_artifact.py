"""save_pretrained / from_pretrained: a bit-exact round trip, and every refusal of the loader."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from safety_polytope.errors import InputError, ModelError
from safety_polytope.polytope import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    NotFittedError,
    SafetyPolytope,
)

SMOL = {"name": "smollm2-135m-instruct", "architecture": "LlamaForCausalLM",
        "model_type": "llama", "hidden_size": 8, "num_layers": 30, "vocab_size": 49152}
GEMMA = {"name": "gemma3-270m", "architecture": "Gemma3ForCausalLM", "model_type": "gemma3_text",
         "hidden_size": 640, "num_layers": 18, "vocab_size": 262144}


def _data(n: int = 300, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = ((X[:, :3] > 0.8).any(1)).long()
    return X, y


def fitted(encoder: str = "relu", calibrate: bool = True) -> SafetyPolytope:
    X, y = _data()
    sp = SafetyPolytope(n_facets=3, encoder=encoder, epochs=3,
                        n_features=None if encoder == "identity" else 16)
    sp.fit(X, y, categories=["a" if i % 3 else "b" for i in range(len(y))])
    sp.set_context(model=SMOL, layer=20, pooling="last",
                   formatting={"chat_template": True, "system_prompt": None, "max_length": None})
    if calibrate:
        sp.calibrate(torch.randn(200, 8, generator=torch.Generator().manual_seed(1)), 0.1,
                     per_facet=True)
    sp.set_facet_names(["violence", "fraud", "weapons"])
    sp.set_steering(layer=21, default_mode="redirect",
                    directions={"refusal": torch.randn(8, generator=torch.Generator())})
    sp.metrics_["test_auroc"] = 0.97
    return sp


def _tensors(sp: SafetyPolytope) -> dict[str, torch.Tensor]:
    return {**{f"encoder.{k}": t for k, t in sp.encoder_.items()}, "facets": sp.facets_,
            "offsets": sp.offsets_, "mean": sp.mean_, "scale": sp.scale_,
            "facet_thresholds": sp.facet_thresholds_,
            **{f"steering.{k}": t for k, t in sp.steering.directions.items()}}


@pytest.mark.parametrize("encoder, calibrate", [("relu", True), ("identity", False)])
def test_round_trip_is_bit_exact(tmp_path: Path, encoder: str, calibrate: bool):
    sp = fitted(encoder, calibrate)
    out = sp.save_pretrained(tmp_path / "sp")
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = SafetyPolytope.from_pretrained(out)
    a, b = _tensors(sp), _tensors(loaded)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and b[k].dtype == torch.float32 for k in a)
    X, _ = _data(seed=7)
    assert torch.equal(sp.violations(X), loaded.violations(X))
    assert torch.equal(sp.predict(X), loaded.predict(X))
    assert loaded.config() == sp.config()
    assert loaded.get_params() == sp.get_params()
    assert loaded.threshold_ == sp.threshold_
    assert loaded.context == sp.context
    assert loaded.steering == sp.steering
    # saving the loaded one writes the same config text
    again = loaded.save_pretrained(tmp_path / "again")
    assert (again / CONFIG_FILE).read_text() == (out / CONFIG_FILE).read_text()
    # a loaded polytope can be recalibrated and refitted like a fresh one
    loaded.calibrate(X, 0.05)
    SafetyPolytope(**loaded.get_params()).fit(*_data())


def test_config_contents(tmp_path: Path):
    sp = fitted()
    config = json.loads((sp.save_pretrained(tmp_path / "sp") / CONFIG_FILE).read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert config["context"] == {"model": SMOL, "layer": 20, "pooling": "last",
                                 "formatting": {"chat_template": True, "system_prompt": None,
                                                "max_length": None}}
    assert config["encoder"] == {"type": "relu", "n_features_in": 8, "n_features": 16}
    assert config["n_facets"] == 3 and config["facet_names"] == ["violence", "fraud", "weapons"]
    assert config["calibration"]["calibrated"] and config["calibration"]["per_facet"]
    assert config["calibration"]["target_fpr"] == 0.1
    assert config["steering"] == {"layer": 21, "default_mode": "redirect",
                                  "directions": {"refusal": [8]}}
    assert config["tensors"]["encoder.W"] == [16, 8]
    assert config["training_data"]["n"] == 300
    assert config["metrics"] == {"test_auroc": 0.97}
    with safe_open(str(tmp_path / "sp" / WEIGHTS_FILE), "pt") as f:
        assert f.metadata()["steering_layer"] == "21"
        assert f.metadata()["format_version"] == FORMAT_VERSION


def test_saving_replaces_an_artifact_but_never_other_directories(tmp_path: Path):
    sp = fitted()
    target = tmp_path / "sp"
    sp.save_pretrained(target)
    sp.set_facet_names(["x", "y", "z"])
    sp.save_pretrained(target)  # replaces the previous save
    assert SafetyPolytope.from_pretrained(target).facet_names_ == ["x", "y", "z"]
    precious = tmp_path / "project"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="non-empty directory that is not a saved"):
        sp.save_pretrained(precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(NotFittedError):
        SafetyPolytope().save_pretrained(tmp_path / "unfitted")
    sp.metrics_["bad"] = object()
    with pytest.raises(InputError, match="not plain JSON"):
        sp.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return fitted().save_pretrained(tmp_path / "sp")


def _edit_config(path: Path, edit) -> None:
    config = json.loads((path / CONFIG_FILE).read_text())
    edit(config)
    (path / CONFIG_FILE).write_text(json.dumps(config))


def test_missing_directory_and_files(tmp_path: Path, saved: Path):
    with pytest.raises(InputError, match="is not a directory"):
        SafetyPolytope.from_pretrained(tmp_path / "nowhere")
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(InputError, match=f"has no {WEIGHTS_FILE}"):
        SafetyPolytope.from_pretrained(saved)
    (saved / CONFIG_FILE).unlink()
    with pytest.raises(InputError, match=f"has no {CONFIG_FILE}"):
        SafetyPolytope.from_pretrained(saved)


def test_invalid_json(saved: Path):
    (saved / CONFIG_FILE).write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        SafetyPolytope.from_pretrained(saved)


def test_newer_major_format_is_refused_and_newer_minor_is_read(saved: Path):
    _edit_config(saved, lambda c: c.update(format_version="1.7"))
    SafetyPolytope.from_pretrained(saved)
    _edit_config(saved, lambda c: c.update(format_version="2.0", library_version="9.9.9"))
    with pytest.raises(InputError, match=r"artifact format 2.0 \(by safety-polytope 9.9.9\).*"
                                         r"reads format 1.x; upgrade safety-polytope"):
        SafetyPolytope.from_pretrained(saved)
    _edit_config(saved, lambda c: c.update(format_version="one"))
    with pytest.raises(InputError, match="format_version 'one'"):
        SafetyPolytope.from_pretrained(saved)


def test_missing_keys_are_errors(saved: Path):
    def drop(c):
        del c["calibration"]
        del c["encoder"]["n_features"]

    _edit_config(saved, drop)
    with pytest.raises(InputError, match="missing required keys: calibration, "
                                         "encoder.n_features"):
        SafetyPolytope.from_pretrained(saved)


def test_unknown_keys_warn_and_load(saved: Path):
    def add(c):
        c["from_the_future"] = 1
        c["context"]["revision"] = "abc"
        c["params"]["temperature"] = 0.5

    _edit_config(saved, add)
    with pytest.warns(UserWarning) as record:
        sp = SafetyPolytope.from_pretrained(saved)
    messages = [str(w.message) for w in record]
    assert any("does not know (ignored): context.revision, from_the_future" in m
               for m in messages)
    assert any("parameters this version does not have (ignored): temperature" in m
               for m in messages)
    assert sp.facets_.shape == (3, 16)


def test_wrong_tensor_shapes_are_refused(saved: Path):
    tensors = load_file(str(saved / WEIGHTS_FILE))
    tensors["facets"] = torch.zeros(3, 15)
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(InputError, match=r"tensor 'facets' .* has shape \(3, 15\), but "
                                         r"config.json says \(3, 16\)"):
        SafetyPolytope.from_pretrained(saved)


def test_missing_or_extra_tensors_and_wrong_dtype_are_refused(saved: Path):
    original = load_file(str(saved / WEIGHTS_FILE))
    save_file({k: v for k, v in original.items() if k != "offsets"}, str(saved / WEIGHTS_FILE))
    with pytest.raises(InputError, match=r"missing tensors \['offsets'\]"):
        SafetyPolytope.from_pretrained(saved)
    save_file({**original, "extra": torch.zeros(1)}, str(saved / WEIGHTS_FILE))
    with pytest.raises(InputError, match=r"unexpected tensors \['extra'\]"):
        SafetyPolytope.from_pretrained(saved)
    save_file({**original, "mean": original["mean"].double()}, str(saved / WEIGHTS_FILE))
    with pytest.raises(InputError, match="'mean' .* is torch.float64; expected torch.float32"):
        SafetyPolytope.from_pretrained(saved)


def test_inconsistent_config_is_refused(saved: Path):
    _edit_config(saved, lambda c: c["encoder"].update(n_features=32))
    with pytest.raises(InputError, match="the config is inconsistent"):
        SafetyPolytope.from_pretrained(saved)


def test_thresholds_must_agree_between_files(saved: Path):
    _edit_config(saved, lambda c: c["calibration"].update(facet_thresholds=[9.0, 9.0, 9.0]))
    with pytest.raises(InputError, match="disagree on the facet thresholds"):
        SafetyPolytope.from_pretrained(saved)


def test_fingerprint_mismatch_names_both_models(saved: Path):
    with pytest.raises(ModelError) as e:
        SafetyPolytope.from_pretrained(saved, model_fingerprint=GEMMA)
    message = str(e.value)
    assert ("built for smollm2-135m-instruct (LlamaForCausalLM, hidden size 8, 30 layers)"
            in message)
    assert "model given is gemma3-270m (Gemma3ForCausalLM, hidden size 640, 18 layers)" in message
    assert "differ in architecture, hidden_size, model_type, num_layers, vocab_size" in message


def test_fingerprint_match_loads_and_accepts_a_loaded_model(saved: Path):
    class FakeLoaded:  # anything with a .fingerprint, like lm.LoadedModel
        @property
        def fingerprint(self) -> dict:
            return {**SMOL, "name": "/models/SmolLM2-135M-Instruct"}  # another name is fine

    assert SafetyPolytope.from_pretrained(saved, model_fingerprint=SMOL).context.layer == 20
    SafetyPolytope.from_pretrained(saved, model_fingerprint=FakeLoaded())


def test_unrecorded_model_warns_and_checks_hidden_size(tmp_path: Path):
    X, y = _data()
    sp = SafetyPolytope(n_facets=2, encoder="identity", epochs=1).fit(X, y)
    path = sp.save_pretrained(tmp_path / "bare")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SafetyPolytope.from_pretrained(path)  # nothing to check, nothing to warn about
    with (pytest.warns(UserWarning, match="records no model fingerprint"),
          pytest.raises(ModelError, match="fitted on 8-dimensional features, but gemma3-270m has "
                                          "hidden size 640")):
        SafetyPolytope.from_pretrained(path, model_fingerprint=GEMMA)
