"""Per-source counts for ``sap datasets``: rows as plain dicts, and a rich Table of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from .records import Record
from .sources import SOURCES, get_source, load_source
from .taxonomy import ALL_CATEGORIES

BASE_COLUMNS = ("source", "kind", "default_use", "n", "n_unsafe", "n_safe")


def summarize_records(name: str, records: Sequence[Record], kind: str = "",
                      default_use: str = "") -> dict[str, Any]:
    """One row: counts of records, of each label and of each category (all taxonomy names)."""
    cats = Counter(r.category for r in records)
    n_unsafe = sum(r.label for r in records)
    row: dict[str, Any] = {"source": name, "kind": kind, "default_use": default_use,
                           "n": len(records), "n_unsafe": n_unsafe,
                           "n_safe": len(records) - n_unsafe}
    row.update({c: cats.get(c, 0) for c in ALL_CATEGORIES})
    extra = sorted(set(cats) - set(ALL_CATEGORIES))
    row.update({c: cats[c] for c in extra})  # user data may carry other names
    return row


def summarize(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per source (default: every registered source), loading each one.

    Keys: source, kind, default_use, n, n_unsafe, n_safe, then one count per taxonomy name
    (``taxonomy.ALL_CATEGORIES`` order).
    """
    rows = []
    for name in (list(names) if names is not None else list(SOURCES)):
        src = get_source(name)
        rows.append(summarize_records(name, load_source(name), src.kind, src.default_use))
    return rows


def summary_table(rows: Sequence[dict[str, Any]], title: str = "Data sources") -> Table:
    """A rich Table of ``summarize`` rows; category columns that are all zero are left out."""
    cat_cols = [c for c in rows[0] if c not in BASE_COLUMNS] if rows else []
    cat_cols = [c for c in cat_cols if any(r.get(c, 0) for r in rows)]
    table = Table(title=title)
    for col in BASE_COLUMNS:
        table.add_column(col.replace("default_use", "use"),
                         justify="right" if col.startswith("n") else "left")
    for col in cat_cols:
        table.add_column(col.replace("_", " "), justify="right")
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in BASE_COLUMNS),
                      *(str(r.get(c, 0) or "") for c in cat_cols))
    if len(rows) > 1:
        total = {c: sum(r.get(c, 0) for r in rows) for c in ("n", "n_unsafe", "n_safe", *cat_cols)}
        table.add_row("total", "", "", *(str(total[c]) for c in ("n", "n_unsafe", "n_safe")),
                      *(str(total[c] or "") for c in cat_cols), style="bold")
    return table
