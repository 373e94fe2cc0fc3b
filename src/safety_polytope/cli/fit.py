"""``sap fit`` and ``sap detect``: learn a polytope, and score prompts with one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..datasets import DEFAULT_TRAIN_SOURCES
from ..errors import InputError
from ..lm import DEFAULT_MODEL
from . import app, console, handle_errors, split_csv


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_detection(det: dict[str, Any]) -> None:
    """Side-by-side test metrics of the polytope and its baselines, plus generalisation."""
    table = Table(title="Test split (unsafe = positive; thresholds calibrated on validation)")
    cols = ("detector", "AUROC", "AUPRC", "TPR@1%FPR", "TPR@5%FPR", "recall", "precision",
            "FPR plain", "FPR borderline")
    for c in cols:
        table.add_column(c, justify="left" if c == "detector" else "right")
    for name, r in det["test"].items():
        m = r["metrics"]
        table.add_row(name, *(_fmt(m[k]) for k in ("auroc", "auprc", "tpr_at_1fpr",
                                                     "tpr_at_5fpr", "recall", "precision")),
                      _fmt(r["fpr_plain"]), _fmt(r["fpr_borderline"]))
    console.print(table)
    if det.get("unseen_sources"):
        t = Table(title="Sources never seen in training (vs. test-split safe prompts)")
        for c in ("source", "detector", "unsafe", "removed dup.", "AUROC", "TPR@5%FPR",
                  "recall"):
            t.add_column(c, justify="left" if c in ("source", "detector") else "right")
        for r in det["unseen_sources"]:
            t.add_row(r["source"], r["detector"], str(r["n_unsafe"]),
                      str(r["removed_near_duplicates"]), _fmt(r["auroc"]),
                      _fmt(r["tpr_at_5fpr"]), _fmt(r["recall_at_threshold"]))
        console.print(t)
    if det.get("leave_one_source_out"):
        t = Table(title="Leave one harmful source out (polytope refitted without it)")
        for c in ("held-out source", "unsafe", "AUROC", "TPR@5%FPR", "recall", "FPR"):
            t.add_column(c, justify="left" if c == "held-out source" else "right")
        for r in det["leave_one_source_out"]:
            t.add_row(r["held_out_source"], str(r["n_unsafe"]), _fmt(r["auroc"]),
                      _fmt(r["tpr_at_5fpr"]), _fmt(r["recall_at_threshold"]),
                      _fmt(r["fpr_at_threshold"]))
        console.print(t)


@app.command("fit")
@handle_errors
def fit_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the polytope artifact."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    layer: int = typer.Option(None, "--layer", "-l", help="Detection layer (default: recorded)."),
    steering_layer: int = typer.Option(None, help="Layer of the refusal direction (default: "
                                                  "the detection layer)."),
    facets: int = typer.Option(None, "--facets", "-k", help="Number of facets K."),
    data: str = typer.Option(",".join(DEFAULT_TRAIN_SOURCES), "--data", "-d",
                             help="Sources and/or files (JSONL/CSV/TXT), comma-separated."),
    preset: str = typer.Option(None, help="Hyper-parameter preset: default | paper."),
    encoder: str = typer.Option(None, help="relu | identity (default: the preset's)."),
    level: str = typer.Option("prompt", help="prompt | token (fit on response tokens of the "
                                             "model's own completions)."),
    target_fpr: float = typer.Option(0.05, help="Calibration target on plain harmless."),
    borderline_fpr: float = typer.Option(0.15, help="Calibration target on borderline "
                                                    "harmless (alarming words)."),
    limit: int = typer.Option(None, help="At most N records per data item (seeded)."),
    seed: int = typer.Option(0),
    direction_prompts: int = typer.Option(64, help="Harmful prompts for the refusal "
                                                   "direction (0: none)."),
    baselines: bool = typer.Option(True, help="Fit K=1, logistic and MLP baselines too."),
    unseen: bool = typer.Option(True, help="Score sources never seen in training."),
    unseen_limit: int = typer.Option(300, help="At most N records per unseen source."),
    device: str = typer.Option("auto"),
    dtype: str = typer.Option("auto"),
) -> None:
    """Fit a polytope through the feature cache, calibrate it on the validation split, write the
    artifact with its metrics, and print the figures."""
    from ..evaluation.detection import evaluate
    from ..training import FitSettings, fit_pipeline

    if level not in ("prompt", "token"):
        raise InputError(f"--level must be prompt or token; got {level!r}.")
    settings = FitSettings(model=model, layer=layer, steering_layer=steering_layer,
                           data=tuple(split_csv(data)), level=level,  # type: ignore[arg-type]
                           preset=preset, n_facets=facets, encoder=encoder,
                           target_fpr=target_fpr, borderline_fpr=borderline_fpr, seed=seed,
                           limit=limit, direction_prompts=direction_prompts, device=device,
                           dtype=dtype)
    res = fit_pipeline(settings)
    det = evaluate(res, baselines=baselines, unseen=unseen, unseen_limit=unseen_limit)
    res.polytope.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(res.polytope.metrics_, indent=2,
                                                 default=str) + "\n")
    d = res.polytope.metrics_["data"]
    console.print(f"Fitted on {d['train']['n']} training rows ({d['train']['unsafe']} unsafe), "
                  f"layer {res.polytope.context.layer}; decontamination removed "
                  f"{res.decontamination['removed_near_duplicates_of_val_test']} training rows.")
    print_detection(det)
    console.print(f"Polytope written to [bold]{out}[/] (metrics in {out / 'metrics.json'})")


@app.command("detect")
@handle_errors
def detect_cmd(
    polytope: Path = typer.Option(..., "--polytope", "-p", help="A saved polytope directory."),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL (prompt/text) or TXT file."),
    output: Path = typer.Option(None, "--output", "-o", help="Write JSON lines here "
                                                             "(default: stdout)."),
    model: str = typer.Option(None, "--model", "-m", help="Default: the polytope's model."),
    device: str = typer.Option("auto"),
) -> None:
    """Score prompts: one JSON object per input with the verdict, score and violated facets."""
    from ..detect import detect_file

    rows = detect_file(polytope, input, model=model, device=device)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if output is None:
        for line in lines:
            typer.echo(line)
        return
    from .._io import atomic_path

    with atomic_path(output) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_unsafe = sum(r["unsafe"] for r in rows)
    console.print(f"{len(rows)} prompts scored, {n_unsafe} flagged unsafe -> {output}")
