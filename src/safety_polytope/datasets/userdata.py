"""Your own labelled data: JSONL, CSV or TXT files.

Schema
------

**JSONL** (``.jsonl``): one JSON object per line; blank lines are skipped.
**CSV** (``.csv``): a header row, then one record per row (quoted fields may span lines).

=============  ========  ===============================================================
field          required  meaning
=============  ========  ===============================================================
``prompt``     yes*      the user text. *Exactly one of ``prompt`` or ``text`` per record.
``text``       yes*      same as ``prompt`` (for data sets that call it ``text``).
``label``      yes**     ``1`` = unsafe, ``0`` = safe. Also accepted: ``"1"``/``"0"``,
                         ``true``/``false``. **May be omitted when a default label is
                         passed (``load_file(path, label=0)``); a record's own label wins.
``response``   no        the assistant's answer, for prompt + response examples.
``category``   no        a harm area of ``taxonomy.CATEGORIES`` (e.g. ``weapons``); other
                         names are kept in ``meta["source_category"]`` and the area is
                         guessed from keywords. For safe records it is kept as
                         ``meta["resembles"]``.
``id``         no        unique within the file; default ``"{source}-{n}"``.
``source``     no        default: the file name.
=============  ========  ===============================================================

Field names are case-insensitive; any other field is an error (so a typo such as ``lable``
does not silently lose the labels).

**TXT** (``.txt``): one prompt per line, blank lines skipped; the label comes from the
``label=`` argument, which is then required.

Examples::

    {"prompt": "How do I pick a lock?", "label": 1, "category": "illegal_activity"}
    {"text": "Suggest a name for my cat.", "label": 0}

    prompt,label
    "Write a poem
    about spring",0

Training needs both classes: by default a file holding only one label is refused; combine two
files (``load_file(harmful, label=1) + load_file(harmless, label=0, require_both_classes=False)``)
or pass ``require_both_classes=False``.

Every error is an ``InputError`` naming the file and, where it applies, the 1-based line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import taxonomy
from .records import SAFE, UNSAFE, Record

logger = logging.getLogger(__name__)

USER_COLUMNS: tuple[str, ...] = ("prompt", "text", "label", "response", "category", "id",
                                 "source")
EXTENSIONS = {".jsonl": "jsonl", ".csv": "csv", ".txt": "txt"}
_LABEL_HELP = "Use 1 (unsafe) or 0 (safe); \"1\"/\"0\" and true/false are accepted too."


def _parse_label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (SAFE, UNSAFE):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("0", "1"):
            return int(v)
        if v in ("true", "false"):
            return int(v == "true")
    raise InputError(f"{where}: label {value!r} is not 0 or 1. {_LABEL_HELP}")


def _check_default_label(label: Any) -> int | None:
    if label is None:
        return None
    return _parse_label(label, "load_file(label=...)")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line}: not UTF-8 text ({exc.reason}). Save the file "
                         f"as UTF-8.") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {lineno}: not valid JSON ({exc.msg} at column "
                             f"{exc.colno}). Each line must be one JSON object such as "
                             f'{{"prompt": "...", "label": 1}}.') from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}, line {lineno}: expected a JSON object such as "
                             f'{{"prompt": "...", "label": 1}}, got a JSON '
                             f"{_json_type(obj)}.")
        yield lineno, {str(k).strip().lower(): v for k, v in obj.items()}


def _json_type(obj: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(obj), type(obj).__name__)


def _check_fields(path: Path, lineno: int, fields: list[str], what: str) -> None:
    unknown = [f for f in fields if f not in USER_COLUMNS]
    if unknown:
        raise InputError(f"{path}, line {lineno}: unknown {what} {unknown[0]!r}. Allowed "
                         f"{what}s: {', '.join(USER_COLUMNS)}.")


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)  # leading blank lines
        if header is None:
            return
        header_line = reader.line_num
        names = [h.strip().lower() for h in header]
        _check_fields(path, header_line, names, "column")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"{path}, line {header_line}: column {dupes[0]!r} appears twice "
                             f"in the header.")
        prev = reader.line_num
        for row in reader:
            start, prev = prev + 1, reader.line_num
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != len(names):
                raise InputError(f"{path}, line {start}: {len(row)} values, but the header "
                                 f"(line {header_line}) has {len(names)} columns. Quote "
                                 f"fields that contain commas or line breaks.")
            yield start, {n: (v if v.strip() else None) for n, v in zip(names, row)}
    except csv.Error as exc:
        raise InputError(f"{path}, line {reader.line_num}: malformed CSV ({exc}).") from None


def _txt_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield lineno, {"prompt": line}


def _optional_str(row: dict[str, Any], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: {key!r} must be a string, got a {_json_type(value)}.")
    value = str(value).strip()
    return value or None


def _category(row_category: str | None, label: int, prompt: str, where: str
              ) -> tuple[str, dict[str, Any]]:
    norm = taxonomy.normalize_category_name(row_category) if row_category else None
    meta: dict[str, Any] = {}
    if label == SAFE:
        if norm in taxonomy.CATEGORIES:
            meta["resembles"] = norm
        if row_category and norm not in taxonomy.CATEGORIES and norm != taxonomy.BENIGN:
            meta["source_category"] = row_category
        return taxonomy.BENIGN, meta
    if norm == taxonomy.BENIGN:
        raise InputError(f"{where}: category 'benign' on an unsafe record (label 1). Use a "
                         f"harm area ({', '.join(taxonomy.CATEGORIES)}) or label 0.")
    if norm is not None:
        return norm, {"category_from": "file"}
    cat, how = taxonomy.resolve_category(prompt)
    meta["category_from"] = how
    if row_category:
        meta["source_category"] = row_category
    return cat, meta


def _to_record(path: Path, lineno: int, n: int, row: dict[str, Any], default_label: int | None,
               default_source: str) -> Record:
    where = f"{path}, line {lineno}"
    _check_fields(path, lineno, list(row), "field")
    present = [k for k in ("prompt", "text") if row.get(k) is not None]
    if len(present) == 2:
        raise InputError(f"{where}: has both 'prompt' and 'text'; give exactly one of them.")
    if not present:
        raise InputError(f"{where}: no 'prompt' or 'text' field; exactly one of them is "
                         f"required (the user text).")
    key = present[0]
    if not isinstance(row[key], str):
        raise InputError(f"{where}: {key!r} must be a string, got a {_json_type(row[key])}.")
    prompt = row[key].strip()
    if not prompt:
        raise InputError(f"{where}: {key!r} is empty.")
    if row.get("label") is not None and row.get("label") != "":
        label = _parse_label(row["label"], where)
    elif default_label is not None:
        label = default_label
    else:
        raise InputError(f"{where}: no 'label'. Add a label to every record (1 = unsafe, "
                         f"0 = safe) or pass a default label, e.g. load_file(path, label=0).")
    source = _optional_str(row, "source", where) or default_source
    rid = _optional_str(row, "id", where) or f"{source}-{n}"
    category, meta = _category(_optional_str(row, "category", where), label, prompt, where)
    return Record(id=rid, prompt=prompt, label=label, category=category, source=source,
                  response=_optional_str(row, "response", where),
                  meta={**meta, "file": path.name, "line": lineno})


def load_file(path: str | os.PathLike[str], label: int | None = None,
              require_both_classes: bool = True) -> list[Record]:
    """Records from a JSONL, CSV or TXT file (schema: see this module's docstring).

    Args:
        path: the file; its extension picks the format.
        label: default label (1 = unsafe, 0 = safe) for records without one; required for TXT.
        require_both_classes: refuse a file whose records all have the same label.

    Raises:
        InputError: missing file, unknown extension, malformed line, unknown field, missing or
            duplicated prompt/text, label not in {0, 1}, duplicate id, empty file, one class
            only. Messages name the file and the 1-based line.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"Data file {p} does not exist.")
    if p.is_dir():
        raise InputError(f"{p} is a directory; pass a .jsonl, .csv or .txt file.")
    fmt = EXTENSIONS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{p}: unsupported file type {p.suffix or '(no extension)'!r}; use "
                         f"{', '.join(EXTENSIONS)} (schema: safety_polytope.datasets.userdata).")
    default_label = _check_default_label(label)
    if fmt == "txt" and default_label is None:
        raise InputError(f"{p}: a .txt file holds prompts only, one per line; pass their label, "
                         f"e.g. load_file({str(p)!r}, label=1) for unsafe prompts (0 = safe).")
    text = _read_text(p)
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "txt": _txt_rows}[fmt](p, text)
    records: list[Record] = []
    first_line: dict[str, int] = {}
    for lineno, row in rows:
        rec = _to_record(p, lineno, len(records), row, default_label, p.name)
        if rec.id in first_line:
            raise InputError(f"{p}, line {lineno}: id {rec.id!r} is already used on line "
                             f"{first_line[rec.id]}; ids must be unique.")
        first_line[rec.id] = lineno
        records.append(rec)
    if not records:
        raise InputError(f"{p}: no records found (the file is empty or holds only blank lines"
                         f"{' and a header' if fmt == 'csv' else ''}).")
    labels = {r.label for r in records}
    if require_both_classes and len(labels) == 1:
        only = labels.pop()
        name, other = ("unsafe", "safe (0)") if only == UNSAFE else ("safe", "unsafe (1)")
        raise InputError(
            f"{p}: all {len(records)} records have label {only} ({name}); training needs both "
            f"classes. Add {other} records, load a second file with them and combine the "
            f"lists, or pass require_both_classes=False.")
    logger.info("%s: loaded %d records (%d unsafe, %d safe)", p, len(records),
                sum(r.label for r in records), sum(1 - r.label for r in records))
    return records
