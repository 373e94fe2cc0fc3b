"""``SafetyPolytope``: K linear facets over a concept-encoded hidden-state space; inside = safe.

Labels everywhere: 1 = unsafe, 0 = safe. Shapes: ``X`` is ``(n, d)`` hidden states, ``f(X)`` is
``(n, F)`` features, ``v = violations(X)`` is ``(n, K)`` with ``v_k = phi_k . f(h) - xi_k``; a
row is safe when every ``v_k <= t_k`` (``t`` = ``facet_thresholds_``, all 0 until calibrated).

Example::

    >>> import torch
    >>> from safety_polytope.polytope import SafetyPolytope
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(400, 8, generator=g); y = (X[:, 0] > 1).long()
    >>> sp = SafetyPolytope(n_facets=2, encoder="identity", epochs=20).fit(X, y)
    >>> sp.violations(X).shape
    torch.Size([400, 2])
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from . import _train
from ._validation import (
    PARAM_MESSAGE,
    NotFittedError,
    as_categories,
    as_features,
    as_labels,
    check_classes,
    resolve_params,
)
from .calibration import auroc, facet_thresholds, global_threshold
from .context import PolytopeContext, SteeringSlot, make_context
from .encoders import EncoderParams, fit_standardization, get_encoder, standardize
from .presets import PARAM_NAMES, PRESETS

logger = logging.getLogger(__name__)

ArrayLike = Any  # torch.Tensor or numpy.ndarray of shape (n, d)


@dataclass(frozen=True)
class FoldedPolytope:
    """The polytope on *raw* hidden states: standardisation folded into the first linear map.

    ``v(h) = facets @ f(h) - offsets`` with ``f`` the encoder applied to ``encoder_params``
    (identity: ``f(h) = h``, and the standardisation is folded into ``facets``/``offsets``).
    Steering solvers use this form, so nothing needs to be un-standardised.
    """

    encoder: str
    encoder_params: EncoderParams
    facets: Tensor  # (K, F)
    offsets: Tensor  # (K,)
    thresholds: Tensor  # (K,) a row is safe when v <= thresholds

    def violations(self, h: Tensor) -> Tensor:
        """``(n, d) -> (n, K)``; differentiable in ``h``."""
        f = get_encoder(self.encoder).apply(self.encoder_params, h)
        return torch.nn.functional.linear(f, self.facets, -self.offsets)


class SafetyPolytope:
    """The Safety Polytope estimator (Chen, As, Krause, ICML 2025), scikit-learn style.

    Every parameter left at ``None`` takes its value from ``preset`` (``None`` = ``"default"``;
    see ``presets.PRESETS``); ``resolved_params()`` shows the values a fit would use.

    Parameters: ``n_facets`` K; ``encoder`` ``"relu"`` or ``"identity"``; ``n_features`` F
    (int or ``"auto"`` = 4 d for relu; identity has F = d); ``margin`` m; ``unsafe_weight``
    w_u; ``l1_features`` lambda_f; ``l1_facets`` lambda_phi; ``reduction`` ``"sum"`` (paper) or
    ``"mean"`` of the hinge terms; ``entropy_reassign``; ``standardize`` (per-column mean/std
    learned in ``fit``); ``init`` ``"scaled"`` or ``"paper"``; ``lr`` (Adam); ``epochs``;
    ``batch_size`` (int or ``"auto"``); ``seed``; ``device``; ``early_stopping`` (patience in
    epochs, 0 = off; only with ``fit(..., validation=...)``: stops when the validation loss has
    not improved for that many epochs and restores the best epoch); ``preset``.

    Learned attributes (after ``fit``): ``encoder_`` (dict of tensors), ``facets_`` (K, F),
    ``offsets_`` (K,), ``mean_``/``scale_`` (d,), ``threshold_`` (float, or None after
    per-facet calibration), ``facet_thresholds_`` (K,), ``n_features_in_`` d, ``n_features_`` F,
    ``params_`` (resolved hyper-parameters), ``history_``, ``facet_names_``,
    ``training_summary_``, ``facet_categories_``, ``calibration_``, ``metrics_`` (a free dict
    for evaluation results, saved with the artifact). All tensors are float32 on the CPU.
    """

    def __init__(
        self,
        n_facets: int | None = None,
        encoder: str | None = None,
        n_features: int | str | None = None,
        margin: float | None = None,
        unsafe_weight: float | None = None,
        l1_features: float | None = None,
        l1_facets: float | None = None,
        reduction: str | None = None,
        entropy_reassign: bool | None = None,
        standardize: bool | None = None,
        init: str | None = None,
        lr: float | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        early_stopping: int | None = None,
        preset: str | None = None,
    ) -> None:
        self.n_facets = n_facets
        self.encoder = encoder
        self.n_features = n_features
        self.margin = margin
        self.unsafe_weight = unsafe_weight
        self.l1_features = l1_features
        self.l1_facets = l1_facets
        self.reduction = reduction
        self.entropy_reassign = entropy_reassign
        self.standardize = standardize
        self.init = init
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.early_stopping = early_stopping
        self.preset = preset

    # ------------------------------------------------------------------ parameters

    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        return (*PARAM_NAMES, "preset")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given (``None`` = from the preset)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> SafetyPolytope:
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise InputError(f"SafetyPolytope has no parameter(s) {', '.join(unknown)}; valid "
                             f"parameters: {', '.join(self._param_names())}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def resolved_params(self) -> dict[str, Any]:
        """The hyper-parameters a fit would use: preset values filled in, all validated."""
        return resolve_params(self.get_params())

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SafetyPolytope:
        """``SafetyPolytope.from_preset("paper", n_facets=30)``; presets: ``presets.PRESETS``."""
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}.")
        return cls(preset=name, **overrides)

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v is not None)
        return f"{type(self).__name__}({given})"

    # ------------------------------------------------------------------ fitting

    def fit(self, X: ArrayLike, y: ArrayLike, categories: Sequence[Any] | None = None,
            validation: tuple[ArrayLike, ArrayLike] | None = None) -> SafetyPolytope:
        """Learn the encoder, facets and offsets from ``X`` ``(n, d)`` and ``y`` ``(n,)``.

        ``categories`` (one label per row, optional) is only summarised: per-facet category
        counts of the unsafe rows, for interpreting facets. ``validation=(X_val, y_val)`` is
        scored every epoch (``history_``: ``val_loss``, ``val_auroc``) and drives early stopping.
        Raises ``InputError`` for bad hyper-parameters or data. Returns ``self``.
        """
        from ..lm import resolve_device

        p = resolve_params(self.get_params())
        device = resolve_device(p["device"])
        K = p["n_facets"]
        Xt = as_features(X, "X", device)
        n, d = Xt.shape
        yt = as_labels(y, n, "y", device)
        n_safe, n_unsafe = check_classes(yt, K)
        cats = as_categories(categories, n)
        encoder = get_encoder(p["encoder"])
        F = self._resolve_n_features(encoder.name, p["n_features"], d, self.n_features)

        mean, scale = fit_standardization(Xt, p["standardize"])
        z = standardize(Xt, mean, scale)
        val = None
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise InputError("validation must be a pair (X_val, y_val); got "
                                 f"{type(validation).__name__}.")
            Xv = as_features(validation[0], "X_val", device)
            if Xv.shape[1] != d:
                raise InputError(f"X_val has {Xv.shape[1]} columns, but X has {d}; both must "
                                 f"come from the same model layer.")
            val = (standardize(Xv, mean, scale), as_labels(validation[1], Xv.shape[0], "y_val",
                                                           device))
        generator = torch.Generator().manual_seed(p["seed"])
        logger.info("fitting SafetyPolytope: n=%d (%d unsafe), d=%d, K=%d, encoder=%s, F=%d",
                    n, n_unsafe, d, K, encoder.name, F)
        result = _train.train(z, yt, val, encoder, F, p, generator)

        self.params_ = p
        self.n_features_in_ = d
        self.n_features_ = F
        self.encoder_ = result.encoder_params
        self.facets_ = result.facets
        self.offsets_ = result.offsets
        self.mean_ = mean.cpu()
        self.scale_ = scale.cpu()
        self.threshold_: float | None = 0.0
        self.facet_thresholds_ = torch.zeros(K)
        self.calibration_: dict[str, Any] | None = None
        self.history_ = result.history
        self.facet_names_ = [f"facet_{k}" for k in range(K)]
        self.metrics_: dict[str, Any] = {}
        v = self._violations_z(z)
        self._summarise(v, yt, cats, n_safe, n_unsafe, result)
        return self

    @staticmethod
    def _resolve_n_features(encoder: str, requested: int | str, d: int, given: Any) -> int:
        """F for this fit. The identity encoder has F = d: a preset's F (meant for relu) is
        ignored, but an explicit, different ``n_features`` is a mistake worth saying so."""
        if encoder == "identity":
            if given not in (None, "auto", d):
                raise InputError(f"n_features={given!r} does not apply to encoder='identity', "
                                 f"whose features are the {d} input columns; leave n_features "
                                 f"unset or use encoder='relu'.")
            return d
        return get_encoder(encoder).n_features(d, None if requested == "auto" else
                                               int(requested))

    def _summarise(self, v: Tensor, y: Tensor, cats: list[str] | None, n_safe: int,
                   n_unsafe: int, result: _train.TrainResult) -> None:
        """Training-data summary and facet usage, saved in ``config.json``."""
        scores = v.max(1).values
        assign = v.argmax(1).cpu()
        unsafe = (y > 0.5).cpu()
        usage = torch.bincount(assign[unsafe], minlength=v.shape[1]).tolist()
        summary: dict[str, Any] = {
            "n": int(y.numel()), "n_safe": n_safe, "n_unsafe": n_unsafe,
            "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "batch_size": result.batch_size,
            "stopped_early": result.stopped_early, "seconds": round(result.seconds, 3),
            "final_loss": result.history[-1]["loss"] if result.history else None,
            "train_accuracy": float(((scores > 0).float() == y).float().mean()),
            "train_auroc": auroc(scores, y), "facet_usage": usage,
        }
        self.facet_categories_: list[dict[str, int]] | None = None
        if cats is not None:
            is_unsafe = unsafe.tolist()
            counts = Counter(zip(cats, is_unsafe))
            summary["categories"] = {c: {"safe": counts[(c, False)], "unsafe": counts[(c, True)]}
                                     for c in sorted(set(cats))}
            per_facet: list[Counter[str]] = [Counter() for _ in range(v.shape[1])]
            for cat, k, bad in zip(cats, assign.tolist(), is_unsafe):
                if bad:
                    per_facet[k][cat] += 1
            self.facet_categories_ = [dict(c.most_common()) for c in per_facet]
        self.training_summary_ = summary

    # ------------------------------------------------------------------ scoring

    def _check_fitted(self) -> None:
        if not hasattr(self, "facets_"):
            raise NotFittedError("This SafetyPolytope is not fitted yet; call fit(X, y) or "
                                 "load one with SafetyPolytope.from_pretrained(path) first.")

    def _check_input(self, X: ArrayLike) -> Tensor:
        self._check_fitted()
        device = X.device if isinstance(X, Tensor) else torch.device("cpu")
        Xt = as_features(X, "X", device)
        if Xt.shape[1] != self.n_features_in_:
            where = self.context.describe()
            raise InputError(f"features have {Xt.shape[1]} columns, but this SafetyPolytope was "
                             f"fitted on {self.n_features_in_}"
                             f"{f' ({where})' if where else ''}; extract features from the "
                             f"same model and layer.")
        return Xt

    def _violations_z(self, z: Tensor) -> Tensor:
        encoder = get_encoder(self.params_["encoder"])
        dev = z.device
        params = {k: t.to(dev) for k, t in self.encoder_.items()}
        phi, xi = self.facets_.to(dev), self.offsets_.to(dev)
        with torch.no_grad():
            return torch.cat([_train.violations(encoder, params, phi, xi, z[s:s + _train.CHUNK])[0]
                              for s in range(0, z.shape[0], _train.CHUNK)])

    def violations(self, X: ArrayLike) -> Tensor:
        """``(n, d) -> (n, K)``: ``v_k = phi_k . f(h) - xi_k`` (> threshold = facet violated).
        On ``X``'s device (CPU for numpy input), float32."""
        Xt = self._check_input(X)
        return self._violations_z(standardize(Xt, self.mean_.to(Xt.device),
                                              self.scale_.to(Xt.device)))

    def features(self, X: ArrayLike) -> Tensor:
        """The concept features ``f(h)``: ``(n, d) -> (n, F)``."""
        Xt = self._check_input(X)
        z = standardize(Xt, self.mean_.to(Xt.device), self.scale_.to(Xt.device))
        params = {k: t.to(Xt.device) for k, t in self.encoder_.items()}
        with torch.no_grad():
            return get_encoder(self.params_["encoder"]).apply(params, z)

    def decision_function(self, X: ArrayLike) -> Tensor:
        """The detection score ``max_k v_k``, ``(n,)``; higher = more unsafe (use for AUROC)."""
        return self.violations(X).max(1).values

    def predict_facets(self, X: ArrayLike) -> Tensor:
        """``(n, K)`` bool: facet k violated, i.e. ``v_k > facet_thresholds_[k]``."""
        v = self.violations(X)
        return v > self.facet_thresholds_.to(v.device)

    def predict(self, X: ArrayLike) -> Tensor:
        """``(n,)`` int64, 1 = unsafe: some facet is violated. After global calibration (or
        none) this is ``decision_function(X) > threshold_``."""
        return self.predict_facets(X).any(1).to(torch.int64)

    # ------------------------------------------------------------------ calibration

    def calibrate(self, X_safe: ArrayLike, target_fpr: float = 0.05,
                  per_facet: bool = False) -> SafetyPolytope:
        """Shift thresholds so that at most ``target_fpr`` of ``X_safe`` (held-out *safe* rows,
        ``(n, d)``) is flagged. Global: one threshold on ``max_k v_k``; ``per_facet``: one per
        facet, each at the same per-facet false-positive rate, the largest whose union meets the
        target. Thresholds may move below 0 (more sensitive) as well as above. Returns ``self``.
        """
        _check_arg("target_fpr", target_fpr, "a float in [0, 1)",
                   isinstance(target_fpr, (int, float)) and not isinstance(target_fpr, bool)
                   and 0.0 <= target_fpr < 1.0)
        _check_arg("per_facet", per_facet, "a bool", isinstance(per_facet, bool))
        v = self.violations(X_safe).cpu()
        if per_facet:
            t = facet_thresholds(v, float(target_fpr))
            self.threshold_ = None
            self.facet_thresholds_ = t
        else:
            thr = global_threshold(v.max(1).values, float(target_fpr))
            self.threshold_ = thr
            self.facet_thresholds_ = torch.full((v.shape[1],), thr)
        flagged = (v > self.facet_thresholds_).any(1)
        self.calibration_ = {
            "target_fpr": float(target_fpr), "per_facet": per_facet, "n_calibration": v.shape[0],
            "fpr": float(flagged.float().mean()), "threshold": self.threshold_,
            "facet_thresholds": self.facet_thresholds_.tolist(),
        }
        logger.info("calibrated on %d safe rows: FPR %.4f (target %.4f)", v.shape[0],
                    self.calibration_["fpr"], target_fpr)
        return self

    # ------------------------------------------------------------------ context, names, steering

    @property
    def context(self) -> PolytopeContext:
        """Where the features came from (empty until ``set_context``)."""
        return getattr(self, "context_", PolytopeContext())

    def set_context(self, model: Any = None, layer: int | None = None,
                    pooling: str | None = None, formatting: Any = None) -> SafetyPolytope:
        """Record what the features were extracted from: ``model`` (a fingerprint dict from
        ``lm.fingerprint`` or a ``LoadedModel``), ``layer`` (1-based), ``pooling`` and
        ``formatting`` (a dict or ``features.Formatting``). Saved with the artifact and checked
        by ``from_pretrained(..., model_fingerprint=...)``. Returns ``self``."""
        self.context_ = make_context(model, layer, pooling, formatting)
        return self

    def set_facet_names(self, names: Sequence[str]) -> SafetyPolytope:
        """Name the facets (e.g. by the harm category each one specialised in)."""
        self._check_fitted()
        names = list(names)
        K = self.facets_.shape[0]
        if len(names) != K or not all(isinstance(s, str) and s for s in names):
            raise InputError(f"facet names must be {K} non-empty strings (one per facet); got "
                             f"{len(names)}: {names!r}.")
        if len(set(names)) != K:
            dupes = sorted({s for s in names if names.count(s) > 1})
            raise InputError(f"facet names must be unique; repeated: {', '.join(dupes)}.")
        self.facet_names_ = names
        return self

    @property
    def steering(self) -> SteeringSlot:
        return getattr(self, "steering_", SteeringSlot())

    def set_steering(self, layer: int | None = None, default_mode: str | None = None,
                     directions: dict[str, Tensor] | None = None) -> SafetyPolytope:
        """Store steering settings and directions (name -> float32 tensor) with the polytope."""
        dirs = {}
        for name, t in (directions or {}).items():
            if not isinstance(name, str) or not name or not isinstance(t, Tensor):
                raise InputError(f"steering directions must map non-empty names to tensors; "
                                 f"got {name!r}: {type(t).__name__}.")
            dirs[name] = t.detach().to("cpu", torch.float32).contiguous()
        self.steering_ = SteeringSlot(layer=layer, default_mode=default_mode, directions=dirs)
        return self

    def folded(self) -> FoldedPolytope:
        """This polytope on raw hidden states (standardisation folded in), on the CPU."""
        self._check_fitted()
        encoder = get_encoder(self.params_["encoder"])
        mean, scale = self.mean_, self.scale_
        if encoder.name == "identity":
            phi = self.facets_ / scale
            xi = self.offsets_ + self.facets_ @ (mean / scale)
            return FoldedPolytope("identity", {}, phi, xi, self.facet_thresholds_.clone())
        if encoder.fold is None:
            raise InputError(f"encoder {encoder.name!r} has no fold(); cannot express it on raw "
                             f"hidden states.")
        return FoldedPolytope(encoder.name, encoder.fold(self.encoder_, mean, scale),
                              self.facets_.clone(), self.offsets_.clone(),
                              self.facet_thresholds_.clone())

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, path: str | PathLike[str]) -> Path:
        """Write ``config.json`` + ``polytope.safetensors`` into directory ``path``, atomically."""
        from .artifact import save_pretrained

        return save_pretrained(self, path)

    @classmethod
    def from_pretrained(cls, path: str | PathLike[str], model_fingerprint: Any = None
                        ) -> SafetyPolytope:
        """Load a saved polytope; with ``model_fingerprint`` (dict or ``LoadedModel``), refuse
        one built for a different model (``ModelError`` naming both)."""
        from .artifact import load_pretrained

        return load_pretrained(path, model_fingerprint=model_fingerprint, cls=cls)

    def config(self) -> dict[str, Any]:
        """The ``config.json`` content of this fitted polytope."""
        from .artifact import build_config

        return build_config(self)


def _check_arg(name: str, value: Any, expected: str, ok: bool) -> None:
    if not ok:
        raise InputError(PARAM_MESSAGE.format(name=name, owner="SafetyPolytope.calibrate",
                                              expected=expected, value=value))

