"""``sap sweep``: validation AUROC at each layer, to choose a model's detection layer."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..datasets import DEFAULT_TRAIN_SOURCES
from ..lm import DEFAULT_MODEL, load_model
from . import app, console, handle_errors, parse_layers, split_csv


@app.command("sweep")
@handle_errors
def sweep_cmd(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    layers: str = typer.Option(None, help="Comma-separated layers (default: every 2nd)."),
    data: str = typer.Option(",".join(DEFAULT_TRAIN_SOURCES), "--data", "-d"),
    preset: str = typer.Option(None),
    facets: int = typer.Option(None, "--facets", "-k"),
    limit: int = typer.Option(None, help="At most N records per data item."),
    seed: int = typer.Option(0),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the rows as JSON."),
    device: str = typer.Option("auto"),
) -> None:
    """Fit on the training split at each layer and report validation AUROC."""
    from ..sweep import best_layer, layer_sweep

    lm = load_model(model, device=device)
    chosen = parse_layers(layers) if layers else list(range(2, lm.n_layers + 1, 2))
    rows = layer_sweep(lm, chosen, split_csv(data), preset=preset, n_facets=facets, seed=seed,
                       limit=limit)
    best = best_layer(rows)
    table = Table(title=f"Layer sweep on {lm.name} (validation split; unsafe = positive)")
    for c in ("layer", "polytope AUROC", "polytope TPR@5%FPR", "probe AUROC",
              "probe TPR@5%FPR", "fit s"):
        table.add_column(c, justify="right")
    for r in rows:
        mark = " *" if r["layer"] == best else ""
        table.add_row(f"{r['layer']}{mark}", f"{r['polytope_auroc']:.4f}",
                      f"{r['polytope_tpr_at_5fpr']:.3f}", f"{r['probe_auroc']:.4f}",
                      f"{r['probe_tpr_at_5fpr']:.3f}", str(r["seconds"]))
    console.print(table)
    console.print(f"Best layer: [bold]{best}[/] (n_train {rows[0]['n_train']}, n_validation "
                  f"{rows[0]['n_validation']})")
    if output:
        output.write_text(json.dumps({"model": lm.fingerprint, "rows": rows, "best": best},
                                     indent=2) + "\n")
