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

``default`` — ours, measured on synthetic polytopes and built for CPU speed (about 33 s for
    20,000 x 576 on 2 quiet cores):
    - standardised inputs (hidden states have a large common offset and a few huge dimensions);
    - F = 4 d (4 d^2 encoder weights; the paper's F = 16384 is sized for a GPU);
    - *mean* hinge reduction, so that lambda_f and lambda_phi mean the same at any batch size
      (Adam itself is scale-invariant); lambda_f 1e-3: with mean reduction lambda_f = 1
      switches every feature off (accuracy falls to the majority class on a known polytope),
      1e-3 keeps ~14% of features active per row;
    - batch ``"auto"`` (about 64 steps per epoch, within [32, 256]) and lr 2e-2, so that small
      data sets still get enough Adam steps in 30 epochs (recovers known polytopes from 1,000
      examples where lr 1e-2 / batch 256 does not) and large ones use the CPU well;
    - a small initialisation (Phi ~ N(0, 1/F), xi = 0) so that initial violations are O(1),
      like the margin;
    - early stopping after 5 epochs without improvement of the validation loss (restoring the
      best epoch) when ``fit(..., validation=...)`` is given; otherwise all 30 epochs run
      (stopping on the noisy training loss ended the benchmark fit at epoch 9 and cost 0.025
      AUROC).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType({
    name: MappingProxyType(row) for name, row in {
        "default": {
            "n_facets": 16, "encoder": "relu", "n_features": "auto", "margin": 1.0,
            "unsafe_weight": 2.0, "l1_features": 1e-3, "l1_facets": 1e-4, "reduction": "mean",
            "entropy_reassign": True, "standardize": True, "init": "scaled", "lr": 2e-2,
            "epochs": 30, "batch_size": "auto", "seed": 42, "device": "cpu", "early_stopping": 5,
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
