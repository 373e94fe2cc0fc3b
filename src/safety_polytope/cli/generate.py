"""``sap generate``: generate with the polytope applied, one JSON line per prompt."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import InputError
from . import app, console, handle_errors


@app.command("generate")
@handle_errors
def generate_cmd(
    polytope: Path = typer.Option(..., "--polytope", "-p"),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL (prompt/text) or TXT file."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON lines to write."),
    mode: str = typer.Option(None, help="redirect | project | safeflow | detect | off "
                                        "(default: the artifact's)."),
    strength: float = typer.Option(None, help="redirect: fraction of the refusal direction."),
    margin: float = typer.Option(None, help="project: steering margin."),
    steps: int = typer.Option(None, help="safeflow: gradient steps."),
    batch_size: int = typer.Option(8),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(0.0),
    seed: int = typer.Option(0),
    model: str = typer.Option(None, "--model", "-m", help="Default: the polytope's model."),
    device: str = typer.Option("auto"),
) -> None:
    """Generate a reply per prompt with steering on (or ``--mode off`` for the plain model)."""
    from .._io import atomic_path
    from ..datasets.userdata import load_file
    from ..detect import load_for_detection
    from ..steering.generate import GENERATE_MODES, generate_steered

    records = load_file(input, label=0, require_both_classes=False)
    sp, lm = load_for_detection(polytope, model, device)
    chosen = mode or sp.steering.default_mode or "redirect"
    if chosen not in GENERATE_MODES:
        raise InputError(f"--mode must be one of {', '.join(GENERATE_MODES)}; got {chosen!r}.")
    opts = {k: v for k, v in (("strength", strength), ("margin", margin), ("steps", steps))
            if v is not None}
    rows = generate_steered(lm, sp, [r.prompt for r in records], mode=chosen,
                            batch_size=batch_size, max_new_tokens=max_new_tokens,
                            temperature=temperature, seed=seed, **opts)
    with atomic_path(output) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                       encoding="utf-8")
    n = sum(r["steered"] for r in rows)
    console.print(f"{len(rows)} prompts, {n} steered (mode {chosen}) -> {output}")
