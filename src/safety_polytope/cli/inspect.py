"""``sap inspect``: what each facet of a saved polytope stands for, and why a text is flagged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import InputError
from ..evaluation.attribution import (
    BASELINES,
    METHODS,
    Attribution,
    attribute,
    render_attribution,
)
from ..evaluation.facets import FacetRow, plot_stored_heatmap, stored_facets
from ..polytope import SafetyPolytope
from . import app, console, err_console, handle_errors


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def facet_rich_table(rows: list[FacetRow], order: list[int], title: str) -> Table:
    """The stored facet table as a rich ``Table`` (rows in ``order``)."""
    table = Table(title=title)
    for col, just in (("#", "right"), ("name", "left"), ("category", "left"),
                      ("MI (bits)", "right"), ("purity", "right"), ("chance", "right"),
                      ("unsafe share", "right"), ("top example", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    by_index = {r.index: r for r in rows}
    for k in order:
        r = by_index[k]
        lift = r.purity / r.chance if r.purity is not None and r.chance else None
        purity = _fmt(r.purity)
        if lift is not None:
            colour = "green" if lift >= 2 else "yellow" if lift > 1.2 else "red"
            purity = f"[{colour}]{purity}[/] ({lift:.1f}x)"
        example = r.top_examples[0][0] if r.top_examples else "–"
        table.add_row(str(r.index), r.name, r.category, _fmt(r.mi, ".3f"), purity,
                      _fmt(r.chance), f"{r.share:.0%}", example.replace("\n", " ")[:80])
    return table


def _print_attribution(attr: Attribution, names: list[str], top: int) -> None:
    table = Table(title=f"Violations of {attr.text[:60]!r}")
    for col in ("#", "facet", "v", "threshold", "violated"):
        table.add_column(col, justify="left" if col == "facet" else "right")
    for k, name in enumerate(names):
        hit = bool(attr.violated[k])
        table.add_row(str(k), name, f"{float(attr.violations[k]):+.3f}",
                      f"{float(attr.thresholds[k]):+.3f}", "[red]yes[/]" if hit else "no")
    console.print(table)
    how = attr.method + (f", baseline {attr.baseline}" if attr.baseline else "")
    k = attr.top_facet
    console.print(f"Tokens pushing facet [bold]{names[k]}[/] (red: towards violation, blue: "
                  f"away; {how}):")
    console.print(render_attribution(attr))
    tokens = Table(title=f"Top {top} tokens per explained facet")
    tokens.add_column("facet")
    tokens.add_column("tokens (score)")
    for f, name in zip(attr.facets, attr.facet_names):
        tokens.add_row(name, "  ".join(f"{t!r} {s:+.3f}" for t, s in attr.top_tokens(f, top)))
    console.print(tokens)


@app.command("inspect")
@handle_errors
def inspect_cmd(
    polytope: Annotated[Path, typer.Option("--polytope", "-p",
                                           help="Directory of a saved polytope.")],
    heatmap: Annotated[Path | None, typer.Option(
        "--heatmap", help="Write the facet-category MI heatmap to this PNG.")] = None,
    text: Annotated[str | None, typer.Option(
        "--text", "-t", help="Explain this prompt token by token.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model for --text (default: the one the polytope was built "
                              "for).")] = None,
    method: Annotated[str, typer.Option(help=f"{' | '.join(METHODS)} (for --text).")
                      ] = "occlusion",
    baseline: Annotated[str, typer.Option(help=f"{' | '.join(BASELINES)}: occlusion replaces "
                                               f"a token with the pad token or deletes it.")
                        ] = "pad",
    top: Annotated[int, typer.Option(help="Tokens listed per facet.")] = 8,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16.")] = "auto",
    blocks: Annotated[str | None, typer.Option(
        help="Dotted path to the decoder blocks, if not found.")] = None,
) -> None:
    """Print the facet table (name, category, MI, purity vs chance, share of unsafe training
    examples) stored at fit time; optionally plot it, or explain a prompt token by token."""
    sp = SafetyPolytope.from_pretrained(polytope)
    try:
        rows, stored = stored_facets(sp)
    except InputError:
        if heatmap is not None:
            raise
        err_console.print(f"[yellow]note:[/] {polytope} stores no facet table (facet names: "
                          f"{', '.join(sp.facet_names_)}); it is computed when fitting with "
                          f"categories.", highlight=False, soft_wrap=True)
    else:
        where = sp.context.describe()
        console.print(f"[bold]{polytope}[/]{f' ({where})' if where else ''}", highlight=False,
                      soft_wrap=True)
        console.print(facet_rich_table(
            rows, stored.get("order") or [r.index for r in rows],
            "Facets: purity vs chance among unsafe training examples"))
        if heatmap is not None:
            out = plot_stored_heatmap(sp, heatmap)
            console.print(f"Heatmap written to {out}")
    if text is None:
        return
    spec = model or (sp.context.model or {}).get("name")
    if not spec:
        raise InputError(f"{polytope} records no model name; pass --model.")
    from ..lm import load_model

    lm = load_model(spec, device=device, dtype=dtype, blocks=blocks)
    sp = SafetyPolytope.from_pretrained(polytope, model_fingerprint=lm)
    attr = attribute(lm, sp, text, method=method, baseline=baseline)  # type: ignore[arg-type]
    _print_attribution(attr, list(sp.facet_names_), top)
