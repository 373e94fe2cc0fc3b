"""Named hyper-parameter sets: the one table every ``SafetyPolytope`` default comes from.

A parameter left at ``None`` in ``SafetyPolytope(...)`` takes its value from the chosen preset
(``preset=None`` means ``"default"``); an explicit value always wins. So
``SafetyPolytope(preset="paper", n_facets=30)`` is the paper's configuration with 30 facets.

``paper`` — parity with Chen, As, Krause (ICML 2025) and its released code:
    Adam lr 1e-2, hinge terms *summed* over the batch, margin 1 (BeaverTails; the per-token
    HarmBench runs used 20-60), unsafe weight 2 (2-4 in the released configs), lambda_f 1,
    lambda_phi 1e-4, seed 42, entropy reassignment on, ReLU concept encoder with F = 16384, raw
    (unstandardised) hidden states, and the reference initialisation (Xavier W, zero b,
    standard-normal Phi and xi). Where the paper leaves a choice open we pick: batch 32
    (DESIGN.md; the released configs use 128), K = 16 (the paper uses 14-50 per data set), 20
    epochs (the released BeaverTails config), no early stopping. It is GPU-sized: on 2 CPU cores
    one epoch over 20,000 x 576 features takes about 40 s (``benchmarks/fit.py``).

``default`` — ours, chosen by measurement on the default model (SmolLM2-135M-Instruct, layer
    20, default sources, seed-0 splits: 1,205 training prompts; test split 258; unseen sources
    HarmBench-test / past-tense / Do-Not-Answer, near-duplicates of training removed;
    ``benchmarks/polytope_configs.py``, 2026-11-28; see BENCHMARKS.md):
    - the *identity* encoder on standardised hidden states, K = 16: test AUROC 0.993-0.995
      and mean unseen-source AUROC 0.87-0.90 over seeds 42/1/2, on a par with a logistic probe
      (0.997 / 0.883). The ReLU encoder (F = 4d) reached 0.997 / 0.920 with seed 42 but
      0.991 / 0.770 with seed 1: less stable at ~1,200 prompts. Identity is also what the
      steering projection solves exactly (a QP in hidden space);
    - 100 epochs with *no* early stopping: the validation loss bottoms out after a few epochs
      while the ranking keeps improving (ReLU, K = 16: early stopping on validation loss gave
      unseen AUROC 0.762, 100 epochs 0.920; identity fits in a few seconds either way);
    - *mean* hinge reduction, so that lambda_f and lambda_phi mean the same at any batch size
      (Adam itself is scale-invariant); lambda_f 1e-3 (with mean reduction lambda_f = 1
      switches every ReLU feature off; with the identity encoder the term is constant);
    - batch ``"auto"`` (about 64 steps per epoch, within [32, 256]) and lr 2e-2;
    - a small initialisation (Phi ~ N(0, 1/F), xi = 0) so that initial violations are O(1),
      like the margin.
    Set ``encoder="relu"`` for the paper's concept encoder with our other defaults.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType({
    name: MappingProxyType(row) for name, row in {
        "default": {
            "n_facets": 16, "encoder": "identity", "n_features": "auto", "margin": 1.0,
            "unsafe_weight": 2.0, "l1_features": 1e-3, "l1_facets": 1e-4, "reduction": "mean",
            "entropy_reassign": True, "standardize": True, "init": "scaled", "lr": 2e-2,
            "epochs": 100, "batch_size": "auto", "seed": 42, "device": "cpu", "early_stopping": 0,
        },
        "paper": {
            "n_facets": 16, "encoder": "relu", "n_features": 16384, "margin": 1.0,
            "unsafe_weight": 2.0, "l1_features": 1.0, "l1_facets": 1e-4, "reduction": "sum",
            "entropy_reassign": True, "standardize": False, "init": "paper", "lr": 1e-2,
            "epochs": 20, "batch_size": 32, "seed": 42, "device": "cpu", "early_stopping": 0,
        },
    }.items()
})

PARAM_NAMES: tuple[str, ...] = tuple(PRESETS["default"])
