"""Save and load a fitted ``SafetyPolytope`` as a directory: config.json + polytope.safetensors.

``config.json`` holds everything a person or another tool wants to read (hyper-parameters, the
model and layer the features came from, calibration, training summary, metrics, steering
settings, and the shape of every tensor); ``polytope.safetensors`` holds the tensors. Never
pickle. Loading checks the format version, the keys, every tensor's shape and dtype, and (when
given) the model's fingerprint.

Tensors: ``encoder.<name>`` (relu: ``encoder.W`` (F, d), ``encoder.b`` (F,)), ``facets``
(K, F), ``offsets`` (K,), ``mean`` (d,), ``scale`` (d,), ``facet_thresholds`` (K,), and
``steering.<name>`` for each steering direction.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .._io import atomic_path
from .._version import __version__
from ..errors import InputError, ModelError
from ._validation import resolve_params
from .context import PolytopeContext, SteeringSlot, as_fingerprint, check_fingerprint
from .encoders import get_encoder

if TYPE_CHECKING:
    from .estimator import SafetyPolytope

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "polytope.safetensors"
FORMAT_VERSION = "1.0"
KIND = "safety-polytope"

# Every key a config must have; for sections, the keys the section must have (None: free-form).
SCHEMA: dict[str, frozenset[str] | None] = {
    "kind": None, "format_version": None, "library_version": None, "params": None,
    "resolved_params": None, "n_facets": None, "facet_names": None, "margins": None,
    "encoder": frozenset({"type", "n_features_in", "n_features"}),
    "context": frozenset({"model", "layer", "pooling", "formatting"}),
    "calibration": frozenset({"calibrated", "threshold", "facet_thresholds", "target_fpr",
                              "per_facet", "n_calibration", "fpr"}),
    "steering": frozenset({"layer", "default_mode", "directions"}),
    "training_data": None, "facet_categories": None, "history": None, "metrics": None,
    "tensors": None,
}


def _jsonable(value: Any) -> Any:
    """NaN/inf become None so that a config survives JSON and compares equal after loading."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.device):
        return str(value)
    return value


def _tensors(sp: SafetyPolytope) -> dict[str, Tensor]:
    out = {f"encoder.{k}": t for k, t in sp.encoder_.items()}
    out.update(facets=sp.facets_, offsets=sp.offsets_, mean=sp.mean_, scale=sp.scale_,
               facet_thresholds=sp.facet_thresholds_)
    out.update({f"steering.{k}": t for k, t in sp.steering.directions.items()})
    return {k: t.detach().to("cpu", torch.float32).contiguous() for k, t in out.items()}


def build_config(sp: SafetyPolytope) -> dict[str, Any]:
    """The ``config.json`` content of a fitted polytope (plain JSON data)."""
    sp._check_fitted()
    cal = sp.calibration_ or {}
    steering = sp.steering
    config = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "params": sp.get_params(),
        "resolved_params": sp.params_,
        "n_facets": int(sp.facets_.shape[0]),
        "facet_names": list(sp.facet_names_),
        "margins": {"training": sp.params_["margin"]},
        "encoder": {"type": sp.params_["encoder"], "n_features_in": sp.n_features_in_,
                    "n_features": sp.n_features_},
        "context": sp.context.to_dict(),
        "calibration": {
            "calibrated": sp.calibration_ is not None,
            "threshold": sp.threshold_,
            "facet_thresholds": sp.facet_thresholds_.tolist(),
            "target_fpr": cal.get("target_fpr"), "per_facet": cal.get("per_facet"),
            "n_calibration": cal.get("n_calibration"), "fpr": cal.get("fpr"),
        },
        "steering": {"layer": steering.layer, "default_mode": steering.default_mode,
                     "directions": {k: list(t.shape) for k, t in steering.directions.items()}},
        "training_data": sp.training_summary_,
        "facet_categories": sp.facet_categories_,
        "history": sp.history_,
        "metrics": sp.metrics_,
        "tensors": {k: list(t.shape) for k, t in sorted(_tensors(sp).items())},
    }
    return _jsonable(config)


def save_pretrained(sp: SafetyPolytope, path: str | PathLike[str]) -> Path:
    """Write the artifact directory ``path`` atomically (it appears whole or not at all).

    An existing saved polytope at ``path`` is replaced; any other existing, non-empty directory
    is refused rather than deleted.
    """
    target = Path(path).expanduser()
    config = build_config(sp)
    try:
        text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise InputError(f"cannot save: config is not plain JSON ({e}); metrics_ and context "
                         f"must hold only dicts, lists, strings, finite numbers, bools and "
                         f"None.") from None
    if target.exists():
        if not target.is_dir():
            raise InputError(f"cannot save to {target}: it exists and is not a directory.")
        if any(target.iterdir()) and not _is_artifact(target):
            raise InputError(f"cannot save to {target}: it is a non-empty directory that is not "
                             f"a saved SafetyPolytope; choose a new or empty directory.")
    metadata = {"format_version": FORMAT_VERSION, "library_version": __version__,
                "steering_layer": "" if sp.steering.layer is None else str(sp.steering.layer)}
    with atomic_path(target, is_dir=True) as tmp:
        save_file(_tensors(sp), str(tmp / WEIGHTS_FILE), metadata=metadata)
        (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
    logger.info("saved SafetyPolytope to %s", target)
    return target


def _is_artifact(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG_FILE).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- loading


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise InputError(f"{path} is not a directory; a saved SafetyPolytope is a directory "
                         f"holding {CONFIG_FILE} and {WEIGHTS_FILE} (see save_pretrained).")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise InputError(f"{path} has no {name}; a saved SafetyPolytope holds {CONFIG_FILE} "
                             f"and {WEIGHTS_FILE}. Was it written by save_pretrained, and "
                             f"completely copied?")
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path / CONFIG_FILE} is not valid JSON ({e}).") from None
    if not isinstance(config, dict):
        raise InputError(f"{path / CONFIG_FILE} must hold a JSON object; got "
                         f"{type(config).__name__}.")
    return config


def _check_version(config: dict[str, Any], path: Path) -> None:
    version = config.get("format_version")
    try:
        major, _minor = (int(x) for x in str(version).split("."))
    except ValueError:
        raise InputError(f"{path / CONFIG_FILE} has format_version {version!r}; expected "
                         f"'MAJOR.MINOR' such as {FORMAT_VERSION!r}.") from None
    ours = int(FORMAT_VERSION.split(".")[0])
    if major > ours:
        raise InputError(
            f"{path} was written in artifact format {version} (by safety-polytope "
            f"{config.get('library_version', '?')}), but this safety-polytope {__version__} "
            f"reads format {ours}.x; upgrade safety-polytope to load it.")
    if major < ours:
        raise InputError(f"{path} uses artifact format {version}, which this version no "
                         f"longer reads (format {ours}.x); re-save it with an older release.")


def _check_keys(config: dict[str, Any], path: Path) -> None:
    missing = sorted(k for k in SCHEMA if k not in config)
    unknown = sorted(k for k in config if k not in SCHEMA)
    for section, required in SCHEMA.items():
        value = config.get(section)
        if required is None or value is None:
            continue
        if not isinstance(value, dict):
            raise InputError(f"{path / CONFIG_FILE}: {section!r} must be an object; got "
                             f"{type(value).__name__}.")
        missing += sorted(f"{section}.{k}" for k in required if k not in value)
        unknown += sorted(f"{section}.{k}" for k in value if k not in required)
    missing, unknown = sorted(missing), sorted(unknown)
    if missing:
        raise InputError(f"{path / CONFIG_FILE} is missing required keys: {', '.join(missing)}; "
                         f"the file is incomplete or not a SafetyPolytope config.")
    if unknown:
        warnings.warn(f"{path / CONFIG_FILE} has keys this version does not know (ignored): "
                      f"{', '.join(unknown)}", UserWarning, stacklevel=4)
    if config["kind"] != KIND:
        raise InputError(f"{path / CONFIG_FILE} has kind {config['kind']!r}, not {KIND!r}.")


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    enc = config["encoder"]
    encoder = get_encoder(enc["type"])
    d, F, K = int(enc["n_features_in"]), int(enc["n_features"]), int(config["n_facets"])
    shapes = {f"encoder.{k}": tuple(s) for k, s in encoder.shapes(d, F).items()}
    shapes.update(facets=(K, F), offsets=(K,), mean=(d,), scale=(d,), facet_thresholds=(K,))
    for name, shape in config["steering"]["directions"].items():
        shapes[f"steering.{name}"] = tuple(int(s) for s in shape)
    return shapes


def _load_tensors(config: dict[str, Any], path: Path) -> dict[str, Tensor]:
    expected = _expected_shapes(config)
    listed = {k: tuple(v) for k, v in config["tensors"].items()}
    if listed != expected:
        raise InputError(f"{path / CONFIG_FILE} lists tensors {listed} but its encoder, facet "
                         f"and steering entries imply {expected}; the config is inconsistent.")
    try:
        tensors = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"cannot read {path / WEIGHTS_FILE}: {e}") from None
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise InputError(f"{path / WEIGHTS_FILE} does not match {CONFIG_FILE}: missing tensors "
                         f"{missing or 'none'}, unexpected tensors {extra or 'none'}.")
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise InputError(f"tensor {name!r} in {path / WEIGHTS_FILE} has shape "
                             f"{tuple(t.shape)}, but {CONFIG_FILE} says {shape}; the two files "
                             f"do not belong together.")
        if t.dtype != torch.float32:
            raise InputError(f"tensor {name!r} in {path / WEIGHTS_FILE} is {t.dtype}; expected "
                             f"torch.float32.")
    return tensors


def load_pretrained(path: str | PathLike[str], model_fingerprint: Any = None,
                    cls: type[SafetyPolytope] | None = None) -> SafetyPolytope:
    """Load a polytope saved by ``save_pretrained``. See ``SafetyPolytope.from_pretrained``."""
    if cls is None:
        from .estimator import SafetyPolytope

        cls = SafetyPolytope
    path = Path(path).expanduser()
    config = _read_config(path)
    _check_version(config, path)
    _check_keys(config, path)
    tensors = _load_tensors(config, path)
    context = PolytopeContext.from_dict(config["context"])
    d = int(config["encoder"]["n_features_in"])
    if model_fingerprint is not None:
        given = as_fingerprint(model_fingerprint) or {}
        if context.model is not None:
            check_fingerprint(context.model, given)
        else:
            warnings.warn(f"{path} records no model fingerprint; cannot check that it was built "
                          f"for {given.get('name', 'this model')}.", UserWarning, stacklevel=3)
        if given.get("hidden_size") not in (None, d):
            raise ModelError(f"{path} was fitted on {d}-dimensional features, but "
                             f"{given.get('name', 'the given model')} has hidden size "
                             f"{given['hidden_size']}.")

    cal = config["calibration"]
    if cal["facet_thresholds"] != tensors["facet_thresholds"].tolist():
        raise InputError(f"{path}: {CONFIG_FILE} and {WEIGHTS_FILE} disagree on the facet "
                         f"thresholds; the two files do not belong together.")
    known = set(cls().get_params())
    params = config["params"]
    if set(params) - known:
        warnings.warn(f"{path / CONFIG_FILE} sets parameters this version does not have "
                      f"(ignored): {', '.join(sorted(set(params) - known))}", UserWarning,
                      stacklevel=3)
    sp = cls(**{k: v for k, v in params.items() if k in known})
    sp.params_ = resolve_params(config["resolved_params"])
    sp.n_features_in_ = d
    sp.n_features_ = int(config["encoder"]["n_features"])
    sp.encoder_ = {k.split(".", 1)[1]: t for k, t in tensors.items() if k.startswith("encoder.")}
    sp.facets_, sp.offsets_ = tensors["facets"], tensors["offsets"]
    sp.mean_, sp.scale_ = tensors["mean"], tensors["scale"]
    sp.facet_thresholds_ = tensors["facet_thresholds"]
    sp.threshold_ = cal["threshold"]
    sp.calibration_ = ({k: cal[k] for k in ("target_fpr", "per_facet", "n_calibration", "fpr",
                                            "threshold", "facet_thresholds")}
                       if cal["calibrated"] else None)
    sp.facet_names_ = list(config["facet_names"])
    sp.training_summary_ = config["training_data"]
    sp.facet_categories_ = config["facet_categories"]
    sp.history_ = config["history"]
    sp.metrics_ = config["metrics"]
    sp.context_ = context
    steering = config["steering"]
    sp.steering_ = SteeringSlot(
        layer=steering["layer"], default_mode=steering["default_mode"],
        directions={k.split(".", 1)[1]: t for k, t in tensors.items()
                    if k.startswith("steering.")})
    return sp
