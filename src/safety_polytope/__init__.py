"""safety-polytope: learn safety constraints inside a language model and enforce them.

Data flows one way: datasets -> features -> polytope -> steering -> generation/serving.
"""

from ._version import __version__
from .errors import AssetError, InputError, ModelError, SapError
from .features import Features, FeatureSpec, Formatting, extract_features
from .lm import DEFAULT_MODEL, LoadedModel, find_blocks, load_model, wrap_model

__all__ = [
    "DEFAULT_MODEL", "AssetError", "Features", "FeatureSpec", "Formatting", "InputError",
    "LoadedModel", "ModelError", "SapError", "__version__", "extract_features", "find_blocks",
    "load_model", "wrap_model",
]
