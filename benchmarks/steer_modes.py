"""A first reading of what each steering mode does on the default model (not the full evaluation).

Greedy completions of held-out (test-split) harmful prompts, borderline harmless prompts
(harmless twins) and plain harmless prompts, with steering off and in each mode; counts replies
the refusal detector calls refusals, replies identical to the unsteered ones, and degenerate
replies (empty, or mostly repeated 3-grams).

    python benchmarks/steer_modes.py --polytope runs/default [--n 24] [--tokens 40]
"""

from __future__ import annotations

import argparse
import json

from safety_polytope.completions import is_degenerate
from safety_polytope.datasets import DEFAULT_TRAIN_SOURCES, load_sources, make_splits
from safety_polytope.detect import load_for_detection
from safety_polytope.generation import generate_batch
from safety_polytope.refusal import is_refusal
from safety_polytope.steering.hook import steer

MODES = {
    "off": None,
    "redirect x0.5": ("redirect", {"strength": 0.5}),
    "redirect x0.75": ("redirect", {"strength": 0.75}),
    "redirect x1": ("redirect", {"strength": 1.0}),
    "project m=1": ("project", {"margin": 1.0}),
    "project m=5": ("project", {"margin": 5.0}),
    "safeflow 1 step": ("safeflow", {"steps": 1}),
    "safeflow 100 steps": ("safeflow", {"steps": 100}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polytope", default="runs/default")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()
    sp, lm = load_for_detection(args.polytope)
    test = make_splits(load_sources(DEFAULT_TRAIN_SOURCES), seed=0).test
    sets = {"harmful": [r.prompt for r in test if r.label == 1][: args.n],
            "borderline": [r.prompt for r in test if r.source == "harmless-twins"][: args.n],
            "plain": [r.prompt for r in test if r.source == "harmless"][: args.n]}
    base: dict[str, list[str]] = {}
    rows = []
    for name, spec in MODES.items():
        row: dict[str, object] = {"mode": name}
        for kind, prompts in sets.items():
            if spec is None:
                out = generate_batch(lm, prompts, max_new_tokens=args.tokens, show_progress=False)
                base[kind] = out
            else:
                with steer(lm, sp, spec[0], **spec[1]):
                    out = generate_batch(lm, prompts, max_new_tokens=args.tokens,
                                         show_progress=False)
            row[f"{kind}_refused"] = sum(map(is_refusal, out))
            row[f"{kind}_unchanged"] = sum(a == b for a, b in zip(out, base[kind]))
            row[f"{kind}_degenerate"] = sum(map(is_degenerate, out))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nn = {', '.join(f'{k} {len(v)}' for k, v in sets.items())}; {args.tokens} greedy "
          f"tokens; refusals by safety_polytope.refusal.is_refusal")


if __name__ == "__main__":
    main()
