"""``sap datasets``: every source with counts per label and harm category, and the splits."""

from __future__ import annotations

import typer
from rich.table import Table

from ..datasets import (
    DEFAULT_TRAIN_SOURCES,
    SOURCES,
    load_sources,
    make_splits,
    summarize,
    summary_table,
)
from ..datasets.resolve import load_data
from . import app, console, handle_errors, split_csv

__all__ = ["load_data"]


@app.command("datasets")
@handle_errors
def datasets_cmd(
    sources: str = typer.Option(None, help="Comma-separated source names (default: all)."),
    splits: bool = typer.Option(False, "--splits",
                                help="Also build the de-duplicated splits of the default "
                                     "training sources and show their sizes."),
    seed: int = typer.Option(0, help="Seed for the splits."),
) -> None:
    """List every data source with counts per label and harm category (1 = unsafe, 0 = safe)."""
    names = split_csv(sources) or list(SOURCES)
    console.print(summary_table(summarize(names)))
    for name in names:
        src = SOURCES[name]
        console.print(f"[bold]{name}[/]: {src.description}", highlight=False)
    if splits:
        sp = make_splits(load_sources(DEFAULT_TRAIN_SOURCES), seed=seed)
        table = Table(title=f"Splits of {', '.join(DEFAULT_TRAIN_SOURCES)} (seed {seed})")
        for col in ("split", "examples", "unsafe", "safe"):
            table.add_column(col, justify="right")
        for name in ("train", "validation", "test"):
            recs = getattr(sp, name)
            n_unsafe = sum(r.label for r in recs)
            table.add_row(name, str(len(recs)), str(n_unsafe), str(len(recs) - n_unsafe))
        console.print(table)
        console.print(sp.report.summary(), highlight=False)
