"""Baseline detectors that run in the same harness as the polytope, so comparisons are fair.

Both follow scikit-learn's conventions: ``__init__`` only stores keyword parameters, ``fit(X, y)``
validates, learns attributes ending in ``_`` and returns ``self``; ``decision_function(X)`` gives
``(n,)`` float64 scores, higher = more unsafe (label 1); ``predict(X)`` flags ``score > 0``.
For a calibrated operating point use ``metrics.threshold_for_fpr`` on the scores of held-out safe
examples and compare scores with it.

- :class:`LogisticProbe`: standardise, then L2 logistic regression (the usual linear probe); the
  strength C is chosen by stratified cross-validation on AUROC unless fixed. Needs scikit-learn.
- :class:`MLPDetector`: a one-hidden-layer ReLU MLP trained with BCE and Adam, early-stopped on a
  stratified validation split (the paper's non-polytope ablation). Pure torch, deterministic on
  CPU for a seed.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 8)); y = (X[:, 0] > 0).astype(int)
>>> probe = LogisticProbe(C=1.0).fit(X, y)
>>> bool((probe.predict(X) == y).mean() > 0.9)
True
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import skip_init

from ..errors import InputError
from .metrics import _as_labels, _auroc, _roc, _to_numpy

logger = logging.getLogger(__name__)

__all__ = ["LogisticProbe", "MLPDetector"]

ArrayLike = Any  # np.ndarray | torch.Tensor | nested sequences of numbers
PARAM_MESSAGE = "The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead."
DEFAULT_C = 1.0  # used when C is None but the data are too small to cross-validate


# --------------------------------------------------------------------------- parameters


def _is_int(v: Any, lo: int) -> bool:
    return (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            and int(v) >= lo)


def _is_real(v: Any, lo: float, strict: bool, hi: float = math.inf) -> bool:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, Real):
        return False
    x = float(v)
    return math.isfinite(x) and (x > lo if strict else x >= lo) and x < hi


@dataclass(frozen=True)
class _Rule:
    """``expected`` completes the sentence "must be ..."; ``check`` says whether a value fits."""

    expected: str
    check: Callable[[Any], bool]


RULES: dict[str, _Rule] = {
    "C": _Rule("None (choose by cross-validation) or a float > 0",
               lambda v: v is None or _is_real(v, 0.0, strict=True)),
    "Cs": _Rule("a non-empty sequence of floats > 0",
                lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
                and all(_is_real(c, 0.0, strict=True) for c in v)),
    "cv": _Rule("an int >= 2", lambda v: _is_int(v, 2)),
    "max_iter": _Rule("an int >= 1", lambda v: _is_int(v, 1)),
    "seed": _Rule("an int >= 0", lambda v: _is_int(v, 0)),
    "hidden_size": _Rule("an int >= 1", lambda v: _is_int(v, 1)),
    "lr": _Rule("a float > 0", lambda v: _is_real(v, 0.0, strict=True)),
    "weight_decay": _Rule("a float >= 0", lambda v: _is_real(v, 0.0, strict=False)),
    "batch_size": _Rule("an int >= 1", lambda v: _is_int(v, 1)),
    "max_epochs": _Rule("an int >= 1", lambda v: _is_int(v, 1)),
    "patience": _Rule("an int >= 1", lambda v: _is_int(v, 1)),
    "validation_fraction": _Rule("a float in [0, 1) (0 turns early stopping off)",
                                 lambda v: _is_real(v, 0.0, strict=False, hi=1.0)),
    "standardize": _Rule("a bool", lambda v: isinstance(v, bool)),
    "device": _Rule("a torch device such as 'cpu' or 'cuda'", lambda v: _is_device(v)),
}


def _is_device(v: Any) -> bool:
    if isinstance(v, torch.device):
        return True
    try:
        torch.device(v)
    except (RuntimeError, TypeError):
        return False
    return isinstance(v, str)


class _Detector:
    """Shared scikit-learn plumbing: parameters, input checks, ``predict``."""

    n_features_in_: int  # set by fit; its absence means "not fitted"

    def _param_names(self) -> list[str]:
        sig = inspect.signature(type(self).__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's keyword parameters; ``type(d)(**d.get_params())`` is an unfitted
        copy (``sklearn.base.clone`` works too)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> _Detector:
        names = self._param_names()
        for name, value in params.items():
            if name not in names:
                raise InputError(f"{type(self).__name__} has no parameter {name!r}; its "
                                 f"parameters are {', '.join(names)}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _validate_params(self) -> None:
        for name, value in self.get_params().items():
            rule = RULES[name]
            if not rule.check(value):
                raise InputError(PARAM_MESSAGE.format(name=name, owner=type(self).__name__,
                                                      expected=rule.expected, value=value))

    # ------------------------------------------------------------------ data

    def _check_X(self, X: ArrayLike, *, fitting: bool) -> np.ndarray:
        """``X`` as a finite float64 ``(n, d)`` array whose width matches the fitted one."""
        owner = type(self).__name__
        if not fitting and not hasattr(self, "n_features_in_"):
            raise InputError(f"This {owner} is not fitted yet; call fit(X, y) first.")
        a = _to_numpy(X, "X")
        if a.ndim != 2:
            hint = " For one example, use X.reshape(1, -1)." if a.ndim == 1 else ""
            raise InputError(f"X must be a 2-D (n_examples, n_features) matrix; got shape "
                             f"{a.shape}.{hint}")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise InputError(f"X is empty (shape {a.shape}); {owner} needs at least one example "
                             f"and one feature.")
        if a.dtype.kind not in "biuf":
            raise InputError(f"X must be numeric; got dtype {a.dtype}.")
        a = a.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            shown = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
            raise InputError(f"X has NaN or inf values in {bad.size} row(s) ({shown}); drop or "
                             f"re-extract those examples.")
        if not fitting and a.shape[1] != self.n_features_in_:
            raise InputError(f"X has {a.shape[1]} columns, but this {owner} was fitted on "
                             f"{self.n_features_in_}; pass features from the same model, layer "
                             f"and pooling.")
        return a

    def _check_Xy(self, X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        a = self._check_X(X, fitting=True)
        labels = _as_labels(y, "y")
        if labels.shape[0] != a.shape[0]:
            raise InputError(f"X has {a.shape[0]} rows but y has {labels.shape[0]} labels; "
                             f"they must describe the same examples.")
        if labels.min() == labels.max():
            only = "unsafe (1)" if labels[0] == 1 else "safe (0)"
            raise InputError(f"y holds only {only} examples; {type(self).__name__} needs both "
                             f"safe (0) and unsafe (1) examples to fit.")
        return a, labels

    def decision_function(self, X: ArrayLike) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, X: ArrayLike) -> np.ndarray:
        """``(n,)`` int64 decisions: 1 (unsafe) where ``decision_function(X) > 0``."""
        return (self.decision_function(X) > 0).astype(np.int64)


def _standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations; a constant column gets scale 1, not a division by
    zero."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale


# --------------------------------------------------------------------------- logistic probe


class LogisticProbe(_Detector):
    """Standardise, then L2-regularised logistic regression (lbfgs): the linear-probe baseline.

    Args:
        C: inverse regularisation strength. ``None`` (default) picks it from ``Cs`` by
            stratified ``cv``-fold cross-validation on AUROC (standardisation refitted inside
            each fold; ties go to the smaller C, the stronger regularisation). Hidden states are
            wide and training sets small, so a fixed C is easily off by orders of magnitude.
        Cs: candidate values of C.
        cv: number of folds (fewer when the rarer class has fewer examples; with fewer than 2,
            ``DEFAULT_C`` is used and a warning logged).
        max_iter: lbfgs iterations.
        seed: shuffles the folds; the fit itself is deterministic.

    Fitted attributes: ``mean_``, ``scale_`` ``(d,)``; ``coef_`` ``(d,)`` in standardised units;
    ``intercept_``; ``C_``; ``cv_auroc_`` (C -> mean fold AUROC, empty when C was fixed);
    ``n_features_in_``.

    Raises:
        InputError: bad parameters, NaN/inf features, labels other than 0/1, a single class, or
            a feature width at predict time that differs from fit time.
        ImportError: scikit-learn is missing (``pip install scikit-learn``).
    """

    def __init__(self, *, C: float | None = None,
                 Cs: Sequence[float] = (0.001, 0.01, 0.1, 1.0, 10.0), cv: int = 5,
                 max_iter: int = 2000, seed: int = 0) -> None:
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X: ArrayLike, y: ArrayLike) -> LogisticProbe:
        """Fit on ``X`` ``(n, d)`` and ``y`` ``(n,)`` (1 = unsafe); returns ``self``."""
        self._validate_params()
        Xa, ya = self._check_Xy(X, y)
        if self.C is None:
            C, self.cv_auroc_ = self._choose_C(Xa, ya)
        else:
            C, self.cv_auroc_ = float(self.C), {}
        self.mean_, self.scale_ = _standardizer(Xa)
        lr = _logistic(C, self.max_iter).fit((Xa - self.mean_) / self.scale_, ya)
        self.coef_ = lr.coef_[0].astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        self.C_ = C
        self.n_features_in_ = Xa.shape[1]
        logger.info("LogisticProbe: C=%g on %d examples x %d features", C, *Xa.shape)
        return self

    def _choose_C(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[float, float]]:
        from sklearn.model_selection import StratifiedKFold  # type: ignore[import-untyped]

        n_splits = min(self.cv, int(np.bincount(y).min()))
        if n_splits < 2:
            logger.warning("LogisticProbe: the rarer class has fewer than 2 examples, too few to "
                           "cross-validate C; using C=%g", DEFAULT_C)
            return DEFAULT_C, {}
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
        Cs = sorted(float(c) for c in self.Cs)
        totals = dict.fromkeys(Cs, 0.0)
        for tr, va in folds.split(X, y):
            mean, scale = _standardizer(X[tr])
            Ztr, Zva = (X[tr] - mean) / scale, (X[va] - mean) / scale
            for C in Cs:
                lr = _logistic(C, self.max_iter).fit(Ztr, y[tr])
                totals[C] += _auroc(*_roc(y[va], Zva @ lr.coef_[0] + lr.intercept_[0])[:2])
        scores = {C: t / n_splits for C, t in totals.items()}
        best = max(Cs, key=lambda C: (scores[C], -C))  # ties: the smaller C
        return best, scores

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """``(n,)`` float64 log-odds of unsafe; higher = more unsafe, 0 = 50%."""
        Xa = self._check_X(X, fitting=False)
        return (Xa - self.mean_) / self.scale_ @ self.coef_ + self.intercept_


def _logistic(C: float, max_iter: int) -> Any:
    try:
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("LogisticProbe needs scikit-learn: pip install "
                          "scikit-learn (a dependency of safety-polytope).") from e
    return LogisticRegression(C=C, max_iter=max_iter, solver="lbfgs")


# --------------------------------------------------------------------------- MLP


class MLPDetector(_Detector):
    """A one-hidden-layer MLP (Linear → ReLU → Linear → logit), BCE loss, Adam, float32.

    Training holds out a stratified ``validation_fraction`` of the data, and keeps the weights of
    the epoch with the lowest validation loss, stopping after ``patience`` epochs without
    improvement. Initialisation, shuffling and the split draw from generators seeded by ``seed``
    (the global torch RNG is untouched), so two fits on CPU give identical weights.

    Args:
        hidden_size: width of the hidden layer.
        lr, weight_decay: Adam's learning rate and (L2) weight decay.
        batch_size: examples per step.
        max_epochs: the most passes over the training split.
        patience: epochs without a better validation loss before stopping.
        validation_fraction: share of each class held out for early stopping; 0, or a class with
            fewer than 2 examples, trains all ``max_epochs`` on everything (logged).
        standardize: standardise features with training-split statistics first; hidden states
            have a few huge-magnitude dimensions that otherwise dominate.
        seed: seeds initialisation, shuffling and the split.
        device: where to train; determinism is only promised on CPU.

    Fitted attributes: ``net_`` (``nn.Sequential``), ``mean_``, ``scale_`` ``(d,)``,
    ``best_epoch_``, ``n_epochs_``, ``history_`` (per epoch: train and validation loss),
    ``n_features_in_``.

    Raises:
        InputError: bad parameters, NaN/inf features, labels other than 0/1, a single class, or
            a feature width at predict time that differs from fit time.
    """

    def __init__(self, *, hidden_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0,
                 batch_size: int = 64, max_epochs: int = 200, patience: int = 10,
                 validation_fraction: float = 0.2, standardize: bool = True, seed: int = 0,
                 device: str = "cpu") -> None:
        self.hidden_size = hidden_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.seed = seed
        self.device = device

    def fit(self, X: ArrayLike, y: ArrayLike) -> MLPDetector:
        """Fit on ``X`` ``(n, d)`` and ``y`` ``(n,)`` (1 = unsafe); returns ``self``."""
        self._validate_params()
        Xa, ya = self._check_Xy(X, y)
        device = torch.device(self.device)
        tr, va = _stratified_split(ya, self.validation_fraction, self.seed)
        if va.size == 0:
            logger.warning("MLPDetector: no validation split (validation_fraction=%g, class "
                           "counts %s); training %d epochs without early stopping",
                           self.validation_fraction, np.bincount(ya).tolist(), self.max_epochs)
        if self.standardize:
            mean, scale = _standardizer(Xa[tr])
        else:
            mean, scale = np.zeros(Xa.shape[1]), np.ones(Xa.shape[1])
        self.mean_, self.scale_ = mean.astype(np.float32), scale.astype(np.float32)
        Z = torch.from_numpy(((Xa - mean) / scale).astype(np.float32)).to(device)
        t = torch.from_numpy(ya.astype(np.float32)).to(device)
        gen = torch.Generator().manual_seed(self.seed)
        net = _make_mlp(Xa.shape[1], self.hidden_size, gen).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        tr_t, va_t = torch.from_numpy(tr).to(device), torch.from_numpy(va).to(device)

        best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
        history: list[dict[str, float]] = []
        for epoch in range(1, self.max_epochs + 1):
            net.train()
            order = tr_t[torch.randperm(tr.size, generator=gen).to(device)]
            total = 0.0
            for start in range(0, tr.size, self.batch_size):
                idx = order[start:start + self.batch_size]
                loss = loss_fn(net(Z[idx]).squeeze(1), t[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * idx.numel()
            record = {"epoch": float(epoch), "train_loss": total / tr.size}
            if va.size:
                net.eval()
                with torch.no_grad():
                    val_loss = float(loss_fn(net(Z[va_t]).squeeze(1), t[va_t]))
                record["val_loss"] = val_loss
                if val_loss < best_loss:
                    best_loss, best_epoch, stale = val_loss, epoch, 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    stale += 1
            history.append(record)
            if va.size and stale >= self.patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        else:
            best_epoch = len(history)
        net.eval()
        self.net_ = net
        self.best_epoch_ = best_epoch
        self.n_epochs_ = len(history)
        self.history_ = history
        self.n_features_in_ = Xa.shape[1]
        logger.info("MLPDetector: %d epochs, kept epoch %d%s", len(history), best_epoch,
                    f" (validation loss {best_loss:.4g})" if va.size else "")
        return self

    def decision_function(self, X: ArrayLike, batch_size: int = 4096) -> np.ndarray:
        """``(n,)`` float64 logits of unsafe (computed in float32); higher = more unsafe."""
        Xa = self._check_X(X, fitting=False)
        Z = ((Xa - self.mean_) / self.scale_).astype(np.float32)
        device = next(self.net_.parameters()).device
        out = []
        with torch.inference_mode():
            for start in range(0, Z.shape[0], batch_size):
                chunk = torch.from_numpy(Z[start:start + batch_size]).to(device)
                out.append(self.net_(chunk).squeeze(1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def _make_mlp(d: int, hidden: int, gen: torch.Generator) -> nn.Sequential:
    """PyTorch's default Linear initialisation (U(±1/√fan_in)), drawn from ``gen``; the layers
    are built uninitialised so the global RNG is not consumed."""
    first: nn.Linear = skip_init(nn.Linear, d, hidden)
    last: nn.Linear = skip_init(nn.Linear, hidden, 1)
    with torch.no_grad():
        for layer in (first, last):
            bound = 1.0 / math.sqrt(layer.in_features)
            for p in (layer.weight, layer.bias):
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))
    return nn.Sequential(first, nn.ReLU(), last)


def _stratified_split(y: np.ndarray, fraction: float, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices (sorted), ``fraction`` of each class in validation and at
    least one example of each class on both sides; no validation if that is impossible."""
    everything = np.arange(y.size)
    counts = np.bincount(y, minlength=2)
    if fraction == 0 or counts.min() < 2:
        return everything, everything[:0]
    rng = np.random.default_rng(seed)
    val = []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(max(1, round(fraction * idx.size)), idx.size - 1)
        val.append(idx[:k])
    va = np.sort(np.concatenate(val))
    return np.setdiff1d(everything, va), va
