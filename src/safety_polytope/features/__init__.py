"""Hidden-state features: formatting, batched early-exit extraction, and the on-disk cache."""

from .cache import Features, extract_features, features_dir
from .extract import POOLINGS, FeatureSpec, forward_states
from .formatting import Formatting, encode

__all__ = ["Features", "FeatureSpec", "Formatting", "POOLINGS", "encode", "extract_features",
           "features_dir", "forward_states"]
