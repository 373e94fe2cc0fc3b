"""``sap extract``: hidden-state features of named data sets or user files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..datasets.resolve import load_data
from ..features import FeatureSpec, Formatting, extract_features
from ..features.cache import maybe_init_distributed
from ..features.io import save_features
from ..lm import DEFAULT_MODEL, default_layer, load_model
from . import app, console, handle_errors, parse_layers, split_csv


@app.command("extract")
@handle_errors
def extract_cmd(
    data: str = typer.Option(..., "--data", "-d",
                             help="Sources and/or data files (JSONL/CSV/TXT), comma-separated."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the features to."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="Alias, local directory, .gguf file or hub id."),
    layer: str = typer.Option(None, "--layer", "-l",
                              help="Layer(s), comma-separated (default: the model's own)."),
    pooling: str = typer.Option("last", help="last | mean | tokens (response tokens)."),
    with_response: bool = typer.Option(False, help="Feed prompt + response where there is one."),
    chat_template: bool = typer.Option(True, help="Apply the model's chat template."),
    label: int = typer.Option(None, help="Label for TXT files (0 safe, 1 unsafe)."),
    limit: int = typer.Option(None, help="At most N examples per source (seeded sample)."),
    batch_size: int = typer.Option(16, help="Examples per forward pass."),
    padding_side: str = typer.Option("right", help="left | right (results are identical)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]."),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16."),
    blocks: str = typer.Option(None, help="Dotted path to the decoder blocks, if not found."),
) -> None:
    """Extract hidden states at one or more layers (one pass, stopping after the deepest).

    Works under ``torchrun --nproc-per-node N -m safety_polytope extract ...``: ranks share the
    work and one cache.
    """
    rank, _world = maybe_init_distributed()
    lm = load_model(model, device=device, dtype=dtype, blocks=blocks)
    layers = parse_layers(layer) if layer else [default_layer(lm)]
    records = load_data(split_csv(data), label=label, limit=limit)
    responses = None
    if with_response or pooling == "tokens":
        responses = [r.response or "" for r in records]
    spec = FeatureSpec(tuple(layers), pooling, Formatting(chat_template=chat_template))  # type: ignore[arg-type]
    feats = extract_features(lm, [r.prompt for r in records], spec, responses=responses,
                             batch_size=batch_size, padding_side=padding_side)
    if rank != 0:
        return
    save_features(out, feats, [r.to_dict() for r in records], lm.fingerprint,
                  {"data": split_csv(data), "limit": limit})
    table = Table(title=f"Features written to {out}")
    for col in ("layer", "examples", "rows", "dim", "unsafe", "safe"):
        table.add_column(col, justify="right")
    n_unsafe = sum(r.label == 1 for r in records)
    for L, t in feats.layers.items():
        table.add_row(str(L), str(feats.n), str(t.shape[0]), str(t.shape[1]), str(n_unsafe),
                      str(len(records) - n_unsafe))
    console.print(table)

