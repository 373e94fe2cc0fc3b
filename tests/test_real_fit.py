"""End to end on the real default model: fit a polytope on a small subset of the default sources,
calibrate, and check detection quality on the held-out test split."""

from __future__ import annotations

import pytest

from safety_polytope.evaluation.detection import evaluate
from safety_polytope.polytope import SafetyPolytope
from safety_polytope.training import FitSettings, fit_pipeline

pytestmark = pytest.mark.slow


def test_fit_on_real_model_subset(tmp_path) -> None:
    res = fit_pipeline(FitSettings(limit=120, direction_prompts=8, max_new_tokens=16,
                                   device="cpu"))
    det = evaluate(res, baselines=False, unseen=False, leave_one_out=False)
    test = det["test"]["polytope"]
    # Stated goal for this small subset (~840 prompts in all): test AUROC >= 0.95.
    assert test["metrics"]["auroc"] >= 0.95, test["metrics"]
    assert res.polytope.calibration_["fpr_plain"] <= 0.05
    assert res.polytope.steering.directions["refusal"].shape == (576,)
    assert len(res.polytope.metrics_["facets"]["rows"]) == res.polytope.facets_.shape[0]
    res.polytope.save_pretrained(tmp_path / "p")
    back = SafetyPolytope.from_pretrained(tmp_path / "p", model_fingerprint=res.lm)
    assert back.config() == res.polytope.config()
