"""Choose a model's detection layer by measurement: fit at each layer, score on validation.

All requested layers come from one early-exit pass per batch (the deepest layer bounds the
cost), then a polytope and a logistic probe are fitted per layer on the training split and
ranked by validation AUROC (unsafe = positive).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .datasets import DEFAULT_TRAIN_SOURCES, make_splits
from .datasets.resolve import load_data
from .errors import InputError
from .evaluation.baselines import LogisticProbe
from .evaluation.metrics import detection_metrics
from .features import FeatureSpec, extract_features
from .lm import LoadedModel
from .polytope import SafetyPolytope
from .training import decontaminate

logger = logging.getLogger(__name__)


def layer_sweep(lm: LoadedModel, layers: Sequence[int], data: Sequence[str] = DEFAULT_TRAIN_SOURCES,
                *, preset: str | None = None, n_facets: int | None = None, seed: int = 0,
                limit: int | None = None, batch_size: int = 16) -> list[dict[str, Any]]:
    """One row per layer: validation AUROC and TPR@5%FPR of the polytope and a logistic probe."""
    layers = sorted({lm.check_layer(int(layer)) for layer in layers})
    if not layers:
        raise InputError("Give at least one layer to sweep, e.g. --layers 6,12,18,24.")
    splits = make_splits(load_data(list(data), limit=limit, seed=seed), seed=seed)
    train, _ = decontaminate(splits.train, splits.validation + splits.test)
    val = splits.validation
    spec = FeatureSpec(tuple(layers), "last")
    ftr = extract_features(lm, [r.prompt for r in train], spec, batch_size=batch_size)
    fva = extract_features(lm, [r.prompt for r in val], spec, batch_size=batch_size)
    ytr = torch.tensor([r.label for r in train])
    yva = np.array([r.label for r in val])
    rows = []
    for layer in layers:
        t = time.perf_counter()
        sp = SafetyPolytope(preset=preset, n_facets=n_facets, seed=seed)
        sp.fit(ftr[layer], ytr, validation=(fva[layer], torch.as_tensor(yva)))
        m = detection_metrics(yva, sp.decision_function(fva[layer]).cpu().numpy())
        probe = LogisticProbe(seed=seed).fit(ftr[layer].numpy(), ytr.numpy())
        mp = detection_metrics(yva, probe.decision_function(fva[layer].numpy()))
        rows.append({"layer": layer, "polytope_auroc": m.auroc,
                     "polytope_tpr_at_5fpr": m.tpr_at_5fpr, "probe_auroc": mp.auroc,
                     "probe_tpr_at_5fpr": mp.tpr_at_5fpr, "n_train": len(train),
                     "n_validation": len(val), "seconds": round(time.perf_counter() - t, 1)})
        logger.info("layer %d: polytope AUROC %.4f, probe %.4f", layer, m.auroc, mp.auroc)
    return rows


def best_layer(rows: Sequence[dict[str, Any]]) -> int:
    """Highest validation AUROC; ties go to TPR@5%FPR, then the shallower layer (cheaper)."""
    return max(rows, key=lambda r: (round(r["polytope_auroc"], 4), r["polytope_tpr_at_5fpr"],
                                    -r["layer"]))["layer"]
