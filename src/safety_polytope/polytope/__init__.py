"""The Safety Polytope: K linear facets over a concept-encoded hidden-state space; inside = safe.

Labels: 1 = unsafe, 0 = safe. ``SafetyPolytope`` is the estimator (fit / calibrate / score,
``save_pretrained`` / ``from_pretrained``); ``polytope_loss`` and ``reassign_by_entropy`` are the
training objective as pure functions; encoders and presets are small registries.
"""

from ._validation import CONSTRAINTS, NotFittedError
from .artifact import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from .calibration import auroc
from .context import PolytopeContext, SteeringSlot
from .encoders import ENCODERS, Encoder, get_encoder, register_encoder
from .estimator import FoldedPolytope, SafetyPolytope
from .loss import assignment_entropy, polytope_loss, reassign_by_entropy
from .presets import PRESETS

__all__ = [
    "CONFIG_FILE", "CONSTRAINTS", "ENCODERS", "FORMAT_VERSION", "PRESETS", "WEIGHTS_FILE",
    "Encoder", "FoldedPolytope", "NotFittedError", "PolytopeContext", "SafetyPolytope",
    "SteeringSlot", "assignment_entropy", "auroc", "get_encoder", "polytope_loss",
    "reassign_by_entropy", "register_encoder",
]
