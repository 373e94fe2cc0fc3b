"""``sap models``: the packaged model aliases."""

from __future__ import annotations

from rich.table import Table

from ..lm import list_aliases
from . import app, console, handle_errors


@app.command("models")
@handle_errors
def models_cmd() -> None:
    """List the packaged model aliases, their size, licence and whether they are cached."""
    table = Table(title="Packaged models (any local directory, .gguf file or hub id works too)")
    for col in ("alias", "description", "params", "download", "license", "chat", "layer",
                "package", "cached"):
        table.add_column(col)
    for r in list_aliases():
        table.add_row(r["alias"], r["description"], r["parameters"], f"{r['download_mb']} MB",
                      r["license"], "yes" if r["chat"] else "no", str(r["default_layer"]),
                      r["packages"], "[green]yes[/]" if r["cached"] else "no")
    console.print(table)
