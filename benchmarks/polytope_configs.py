"""Which polytope training choices pay off on the default model? One run, same splits.

Fits several configurations on the default training split (features come from the cache after
the first run) and prints test AUROC, TPR@5%FPR, and AUROC on sources never seen in training
(HarmBench test, past-tense rewordings, Do-Not-Answer; near-duplicates of training removed),
beside the logistic-probe baseline.

    python benchmarks/polytope_configs.py [--layer 20] [--unseen-limit 300]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from safety_polytope.datasets import contamination
from safety_polytope.datasets.resolve import load_data
from safety_polytope.evaluation.baselines import LogisticProbe
from safety_polytope.evaluation.metrics import detection_metrics
from safety_polytope.features import FeatureSpec
from safety_polytope.polytope import SafetyPolytope
from safety_polytope.training import FitSettings, fit_pipeline, split_features

CONFIGS: dict[str, dict] = {
    "default K=16": {},
    "K=1": {"n_facets": 1},
    "K=4": {"n_facets": 4},
    "K=8": {"n_facets": 8},
    "K=16 no early stop": {"early_stopping": 0},
    "K=16 100 epochs, no early stop": {"early_stopping": 0, "epochs": 100},
    "K=16 identity": {"encoder": "identity"},
    "K=4 identity": {"encoder": "identity", "n_facets": 4},
    "K=16 margin 0.5, w_u 1": {"margin": 0.5, "unsafe_weight": 1.0},
    "K=16 no reassignment": {"entropy_reassign": False},
    "K=16 l1_features 0": {"l1_features": 0.0},
    "K=16 100 epochs, patience 20": {"epochs": 100, "early_stopping": 20},
    "K=16 100 epochs, no early stop, seed 1": {"early_stopping": 0, "epochs": 100, "seed": 1},
    "K=16 identity 100 epochs, no early stop": {"encoder": "identity", "early_stopping": 0,
                                                "epochs": 100},
    "K=4 100 epochs, no early stop": {"n_facets": 4, "early_stopping": 0, "epochs": 100},
    "K=16 identity 100 epochs, seed 1": {"encoder": "identity", "early_stopping": 0,
                                         "epochs": 100, "seed": 1},
    "K=16 identity 100 epochs, seed 2": {"encoder": "identity", "early_stopping": 0,
                                         "epochs": 100, "seed": 2},
    "K=8 identity 100 epochs": {"encoder": "identity", "early_stopping": 0, "epochs": 100,
                                "n_facets": 8},
    "K=1 identity 100 epochs": {"encoder": "identity", "early_stopping": 0, "epochs": 100,
                                "n_facets": 1},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--unseen-limit", type=int, default=300)
    ap.add_argument("--only", default=None, help="config names separated by semicolons")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = fit_pipeline(FitSettings(layer=args.layer, direction_prompts=0),
                       polytope=SafetyPolytope(n_facets=1, epochs=1))
    layer = res.polytope.context.layer
    safe = res.test.subset(res.test.y == 0)
    unseen = {}
    for name in ("harmbench-test", "past-tense", "donotanswer"):
        recs = [r for r in load_data([name], limit=args.unseen_limit, seed=0) if r.label == 1]
        dirty = {id(r) for r in contamination(recs, res.train.records)}
        clean = [r for r in recs if id(r) not in dirty]
        feats = split_features(res.lm, clean, FeatureSpec((layer,), "last"))
        unseen[name] = (torch.cat([feats.X, safe.X]),
                        np.r_[np.ones(len(clean)), np.zeros(len(safe.X))])
    tr, va, te = res.train, res.validation, res.test
    rows = []
    todo = dict(CONFIGS)
    if args.only:
        todo = {k: v for k, v in CONFIGS.items() if k in args.only.split(";")}
    models = {name: (lambda p=params: SafetyPolytope(**p)) for name, params in todo.items()}
    models["logistic probe"] = lambda: LogisticProbe()
    for name, make in models.items():
        t = time.perf_counter()
        m = make()
        if isinstance(m, SafetyPolytope):
            m.fit(tr.X, tr.y, validation=(va.X, va.y))
            score = lambda X, m=m: m.decision_function(X).cpu().numpy()  # noqa: E731
        else:
            m.fit(tr.X.numpy(), tr.y.numpy())
            score = lambda X, m=m: m.decision_function(np.asarray(X))  # noqa: E731
        row = {"config": name, "fit_s": round(time.perf_counter() - t, 1)}
        mt = detection_metrics(te.y.numpy(), score(te.X))
        row.update(test_auroc=mt.auroc, test_tpr5=mt.tpr_at_5fpr)
        for src, (X, y) in unseen.items():
            row[f"{src}_auroc"] = detection_metrics(y, score(X)).auroc
        row["unseen_mean_auroc"] = float(np.mean([row[f"{s}_auroc"] for s in unseen]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nlayer {layer}, train {len(tr.X)}, test {len(te.X)}, unseen "
          f"{ {k: int(v[1].sum()) for k, v in unseen.items()} }")
    hdr = ["config", "test_auroc", "test_tpr5", "harmbench-test_auroc", "past-tense_auroc",
           "donotanswer_auroc", "unseen_mean_auroc", "fit_s"]
    print(" | ".join(hdr))
    for r in rows:
        print(" | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in hdr))
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
