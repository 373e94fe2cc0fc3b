"""Reading text files straight out of the pinned wheels (never installed), and small helpers
shared by the source loaders."""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from collections.abc import Iterable
from typing import Any

import yaml

from .. import assets
from ..errors import AssetError

logger = logging.getLogger("safety_polytope.datasets")


def _decode(raw: bytes, package: str, member: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.warning("%s in %s is not UTF-8; decoding it as latin-1", member, package)
        return raw.decode("latin-1")


def member_text(package: str, member: str) -> str:
    """UTF-8 text of one wheel member (latin-1 as a logged fallback: some CSVs are not UTF-8)."""
    return _decode(assets.read_member(package, member), package, member)


def member_texts(package: str, members: Iterable[str]) -> dict[str, str]:
    """Texts of many members, opening the archive once (pyrit's has thousands of entries)."""
    with zipfile.ZipFile(assets.fetch_wheel(package)) as zf:
        return {m: _decode(zf.read(m), package, m) for m in members}


def csv_rows(package: str, member: str) -> list[dict[str, str]]:
    """Rows of a CSV member as dicts. Leading ``#`` comment lines (pyrit's dataset headers) are
    skipped; ``#`` lines *inside* quoted multi-line fields are data and are kept."""
    lines = member_text(package, member).splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].lstrip()[:1] in ("#", ""):
        start += 1
    reader = csv.DictReader(io.StringIO("".join(lines[start:]), newline=""))
    rows = []
    for row in reader:
        if None in row:  # more values than header columns: the layout is not what we expect
            raise AssetError(f"{member} in {package}, record {reader.line_num}: more values than "
                             f"header columns ({reader.fieldnames}).")
        rows.append({k.strip(): (v or "") for k, v in row.items()})
    return rows


def json_member(package: str, member: str) -> Any:
    return json.loads(member_text(package, member))


def jsonl_member(package: str, member: str) -> list[Any]:
    return [json.loads(line) for line in member_text(package, member).splitlines()
            if line.strip()]


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load``, with libyaml's C parser when present (same safe subset, ~10x faster:
    pyrit's 655 templates take seconds with the pure-Python one)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def yaml_member(package: str, member: str) -> Any:
    return safe_yaml(member_text(package, member))


def lines_member(package: str, member: str) -> list[str]:
    """Non-blank, stripped lines."""
    return [ln.strip() for ln in member_text(package, member).splitlines() if ln.strip()]


def clean(text: Any) -> str:
    """Strip surrounding whitespace and unify line endings; None becomes ''."""
    if text is None:
        return ""
    return str(text).replace("\r\n", "\n").strip()


def log_loaded(name: str, n: int, skipped: int = 0, why: str = "") -> None:
    if skipped:
        logger.info("%s: loaded %d records, skipped %d (%s)", name, n, skipped, why)
    else:
        logger.info("%s: loaded %d records", name, n)
