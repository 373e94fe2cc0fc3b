"""Fit time of SafetyPolytope on 20,000 x 576 features (SmolLM2-135M's hidden size), K = 16.

The data are random but structured like hidden states: a large common offset, a few
high-variance "outlier" dimensions, most variance in a 16-dimensional subspace, and labels from
a known polytope (4 half-spaces in that subspace; 1 = unsafe = outside), with a small gap at the
boundary. A held-out set gives accuracy and AUROC, so a fast but useless fit would show.

    python benchmarks/fit.py                       # default and paper presets
    python benchmarks/fit.py --presets paper --set epochs=2 --set n_features=2304
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from safety_polytope import __version__
from safety_polytope.polytope import SafetyPolytope, auroc


def make_data(n: int, d: int, n_true: int = 4, rank: int = 16, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X (n, d), y (n,))``; y = 1 (unsafe) outside a known polytope, ~40% of rows."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g))[0]  # (d, rank)
    spectrum = torch.linspace(3.0, 0.5, rank)
    offset = torch.randn(d, generator=g) * 4.0
    outliers = torch.randperm(d, generator=g)[:4]
    # facet normals inside the high-variance subspace, in the coordinates of x itself
    normals = torch.nn.functional.normalize(
        torch.randn(n_true, rank, generator=g) * spectrum, dim=1) @ basis.T  # (n_true, d)
    x = (torch.randn(2 * n, rank, generator=g) * spectrum) @ basis.T
    x += 0.3 * torch.randn(2 * n, d, generator=g)
    proj = x @ normals.T  # (2n, n_true)
    cut = proj.quantile(0.6 ** (1 / n_true), dim=0)  # ~40% of rows violate some facet
    margin = (proj - cut).max(1).values
    keep = (margin.abs() > 0.05 * proj.std()).nonzero().flatten()[:n]
    x = x[keep] + offset
    x[:, outliers] *= 20.0  # a few huge dimensions, as in real residual streams
    return x, (margin[keep] > 0).long()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--presets", default="default,paper")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a hyper-parameter, e.g. --set epochs=5 (repeatable)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            overrides[name] = json.loads(value)  # numbers, true/false
        except ValueError:
            overrides[name] = value  # plain strings such as identity
    X, y = make_data(args.n + 4000, args.d)
    Xtr, ytr, Xte, yte = X[:args.n], y[:args.n], X[args.n:], y[args.n:]
    print(f"safety-polytope {__version__}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {args.device}")
    print(f"data: {args.n} x {args.d} train ({float(ytr.float().mean()):.0%} unsafe), "
          f"4000 held out, K = {args.k}")
    for preset in args.presets.split(","):
        sp = SafetyPolytope.from_preset(preset, n_facets=args.k, device=args.device,
                                        **overrides)
        t = time.perf_counter()
        sp.fit(Xtr, ytr)
        seconds = time.perf_counter() - t
        score = sp.decision_function(Xte)
        result = {
            "preset": preset, "seconds": round(seconds, 2), "epochs": len(sp.history_),
            "s_per_epoch": round(seconds / len(sp.history_), 3),
            "F": sp.n_features_, "batch_size": sp.training_summary_["batch_size"],
            "test_accuracy": round(float((sp.predict(Xte) == yte).float().mean()), 4),
            "test_auroc": round(auroc(score, yte), 4),
            "facet_usage": sp.training_summary_["facet_usage"],
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
