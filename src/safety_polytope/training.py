"""Fit a polytope end to end: data -> splits -> features -> fit -> calibrate -> steering direction.

This is the orchestration behind ``sap fit`` and ``sap demo``; every step is a library call that
can also be used alone. Figures are computed by ``evaluation.detection`` on the test split only
after training was decontaminated against validation and test.

Calibration uses two held-out safe sets, because thresholds are only as good as the harmless
data they saw: plain harmless prompts (target ``target_fpr``) and borderline harmless prompts
with alarming words (``harmless-twins``, target ``borderline_fpr``). The threshold is the higher
of the two, so both targets hold on the calibration data.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .datasets import DEFAULT_TRAIN_SOURCES, Record, contamination, make_splits
from .datasets.resolve import load_data
from .errors import InputError
from .evaluation.facets import apply_facet_names, facet_table
from .features import FeatureSpec, Formatting, extract_features
from .lm import DEFAULT_MODEL, LoadedModel, default_layer, load_model
from .polytope import SafetyPolytope
from .polytope.calibration import global_threshold

logger = logging.getLogger(__name__)

BORDERLINE_SOURCES = frozenset({"harmless-twins"})


@dataclass
class FitSettings:
    """Everything ``sap fit`` can set. ``data`` items are source names or data files."""

    model: str = DEFAULT_MODEL
    layer: int | None = None
    steering_layer: int | None = None
    data: tuple[str, ...] = DEFAULT_TRAIN_SOURCES
    level: Literal["prompt", "token"] = "prompt"
    preset: str | None = None
    n_facets: int | None = None
    encoder: str | None = None
    target_fpr: float = 0.05
    borderline_fpr: float = 0.15
    seed: int = 0
    limit: int | None = None  # at most N records per data item (seeded sample)
    direction_prompts: int = 64  # harmful training prompts used for the refusal direction
    max_new_tokens: int = 48
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "auto"
    chat_template: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = list(self.data)
        return d


@dataclass
class SplitFeatures:
    """Rows of one split: features at the detection layer, labels, and the record each row
    came from (one row per prompt, or one per response token at token level, where a row's
    label is its completion's, not its prompt's)."""

    records: list[Record]
    X: Tensor
    y: Tensor | None = None

    def __post_init__(self) -> None:
        if self.y is None:
            self.y = torch.tensor([r.label for r in self.records], dtype=torch.long)

    def subset(self, mask: list[bool] | Tensor) -> SplitFeatures:
        m = torch.as_tensor(mask, dtype=torch.bool)
        return SplitFeatures([r for r, k in zip(self.records, m.tolist()) if k], self.X[m],
                             self.y[m])

    def calibration_sets(self) -> tuple[Tensor, Tensor]:
        """``(plain, borderline)``: safe rows of harmless prompts, split by whether the prompt
        is borderline (alarming words)."""
        harmless = [r.label == 0 for r in self.records]
        border = [is_borderline(r) for r in self.records]
        safe = (self.y == 0).tolist()
        plain_m = torch.tensor([s and h and not b for s, h, b in zip(safe, harmless, border)])
        border_m = torch.tensor([s and h and b for s, h, b in zip(safe, harmless, border)])
        return self.X[plain_m], self.X[border_m]


@dataclass
class FitResult:
    polytope: SafetyPolytope
    lm: LoadedModel
    train: SplitFeatures
    validation: SplitFeatures
    test: SplitFeatures
    decontamination: dict[str, int]
    seconds: dict[str, float]


def is_borderline(r: Record) -> bool:
    return r.label == 0 and (r.source in BORDERLINE_SOURCES or "resembles" in r.meta)


def decontaminate(train: list[Record], held_out: list[Record]) -> tuple[list[Record], int]:
    """Drop training records that are exact or near duplicates of any held-out record."""
    bad = {id(r) for r in contamination(train, held_out)}
    kept = [r for r in train if id(r) not in bad]
    return kept, len(train) - len(kept)


def split_features(lm: LoadedModel, records: list[Record], spec: FeatureSpec,
                   batch_size: int = 16) -> SplitFeatures:
    if not records:
        return SplitFeatures([], torch.empty(0, lm.hidden_size))
    feats = extract_features(lm, [r.prompt for r in records], spec, batch_size=batch_size)
    return SplitFeatures(records, feats[spec.layers[0]])


def calibrate_two_sets(sp: SafetyPolytope, plain: Tensor, borderline: Tensor,
                       target_fpr: float, borderline_fpr: float) -> dict[str, Any]:
    """Calibrate on whichever safe set needs the higher threshold, so both targets hold.

    Returns the false-positive rate reached on each calibration set.
    """
    if len(plain) == 0:
        raise InputError("Calibration needs held-out plain harmless examples (label 0); the "
                         "validation split has none. Add safe data (e.g. --data harmless).")
    sp.calibrate(plain, target_fpr)
    if len(borderline):
        needed = global_threshold(sp.decision_function(borderline).cpu(), borderline_fpr)
        if sp.threshold_ is not None and needed > sp.threshold_:
            sp.calibrate(borderline, borderline_fpr)
    fpr_plain = int(sp.predict(plain).sum()) / len(plain)
    fpr_border = int(sp.predict(borderline).sum()) / len(borderline) if len(borderline) \
        else float("nan")
    sp.calibration_.update({"plain_target_fpr": target_fpr, "borderline_target_fpr":
                            borderline_fpr, "fpr_plain": fpr_plain,
                            "fpr_borderline": fpr_border, "n_plain": len(plain),
                            "n_borderline": len(borderline)})
    return sp.calibration_


def refusal_direction(lm: LoadedModel, harmful: list[Record], layer: int, *,
                      n_prompts: int = 64, max_new_tokens: int = 48, batch_size: int = 16,
                      seed: int = 0, formatting: Formatting = Formatting()) -> tuple[Tensor, dict]:
    """Mean response-token state of teacher-forced refusals minus that of the model's own
    compliant completions of the same harmful prompts, at ``layer`` (DESIGN.md, ``redirect``).

    Returns ``(direction (d,), summary)``.
    """
    from .completions import build_completions

    harmful = harmful[:n_prompts]
    comps = build_completions(lm, harmful, [], max_new_tokens=max_new_tokens,
                              batch_size=batch_size, seed=seed, formatting=formatting)
    compliant = comps.of_kind("compliant")
    forced = comps.of_kind("refusal_forced")
    if not compliant or not forced:
        raise InputError(f"Cannot learn a refusal direction: {len(compliant)} compliant and "
                         f"{len(forced)} refusal completions (need both). The model may refuse "
                         f"everything already; steering by direction is not needed then.")
    spec = FeatureSpec((layer,), "tokens", formatting)

    def mean_state(items: list[Any]) -> Tensor:
        feats = extract_features(lm, [c.prompt for c in items], spec,
                                 responses=[c.response for c in items], batch_size=batch_size,
                                 show_progress=False)
        return feats[layer].mean(0)

    direction = mean_state(forced) - mean_state(compliant)
    return direction, {"n_compliant": len(compliant), "n_refusal_forced": len(forced),
                       "n_prompts": len(harmful), "layer": layer,
                       "norm": float(direction.norm())}


def fit_pipeline(settings: FitSettings, lm: LoadedModel | None = None,
                 polytope: SafetyPolytope | None = None) -> FitResult:
    """Fit, calibrate and annotate a polytope as ``settings`` say. Metrics are added by
    ``evaluation.detection.evaluate`` (kept separate so they can be recomputed)."""
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    lm = lm or load_model(settings.model, device=settings.device, dtype=settings.dtype)
    layer = lm.check_layer(settings.layer or default_layer(lm))
    steer_layer = lm.check_layer(settings.steering_layer or layer)
    fmt = Formatting(chat_template=settings.chat_template)
    spec = FeatureSpec((layer,), "last", fmt)

    records = load_data(list(settings.data), limit=settings.limit, seed=settings.seed)
    splits = make_splits(records, seed=settings.seed)
    train, n_removed = decontaminate(splits.train, splits.validation + splits.test)
    decon = {"train_before": len(splits.train), "removed_near_duplicates_of_val_test": n_removed,
             "exact_duplicates_merged": splits.report.n_exact_dropped}
    for name, recs in (("train", train), ("validation", splits.validation)):
        if len({r.label for r in recs}) < 2:
            raise InputError(f"The {name} split has only one class ({len(recs)} records); "
                             f"fitting needs unsafe (1) and safe (0) examples. Add data of the "
                             f"other class, e.g. --data harmless or a file with label 0.")
    seconds["data"] = time.perf_counter() - t0

    t = time.perf_counter()
    tr = split_features(lm, train, spec, settings.batch_size)
    va = split_features(lm, splits.validation, spec, settings.batch_size)
    te = split_features(lm, splits.test, spec, settings.batch_size)
    seconds["features"] = time.perf_counter() - t

    if settings.level == "token":
        t = time.perf_counter()
        tr, va, te = (token_features(lm, s, layer, settings, fmt) for s in (tr, va, te))
        seconds["token_features"] = time.perf_counter() - t

    t = time.perf_counter()
    sp = polytope or SafetyPolytope(preset=settings.preset, n_facets=settings.n_facets,
                                    encoder=settings.encoder)
    categories = [r.category if int(y) == 1 else "benign" for r, y in zip(tr.records, tr.y)]
    sp.fit(tr.X, tr.y, categories=categories, validation=(va.X, va.y))
    seconds["fit"] = time.perf_counter() - t
    calibrate_two_sets(sp, *va.calibration_sets(), settings.target_fpr, settings.borderline_fpr)
    # Name each facet by the harm category it specialised in (after calibration: the table
    # uses the final thresholds); stored in metrics_["facets"] for `sap inspect`.
    apply_facet_names(sp, facet_table(sp, tr.X, tr.y, categories,
                                      [r.prompt for r in tr.records]))

    t = time.perf_counter()
    directions: dict[str, Tensor] = {}
    summary: dict[str, Any] = {}
    harmful_train = [r for r in train if r.label == 1]
    if settings.direction_prompts > 0 and harmful_train:
        try:
            directions["refusal"], summary = refusal_direction(
                lm, harmful_train, steer_layer, n_prompts=settings.direction_prompts,
                max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                seed=settings.seed, formatting=fmt)
        except InputError as exc:
            logger.warning("No refusal direction: %s", exc)
    seconds["direction"] = time.perf_counter() - t
    sp.set_steering(layer=steer_layer, default_mode="redirect" if directions else "refuse",
                    directions=directions)

    sp.set_context(model=lm, layer=layer, pooling="last" if settings.level == "prompt"
                   else "tokens", formatting=fmt)
    sp.metrics_["fit_settings"] = settings.to_dict()
    sp.metrics_["decontamination"] = decon
    sp.metrics_["data"] = {
        name: {"n": len(s.records), "unsafe": int(s.y.sum()), "safe": int((s.y == 0).sum()),
               "sources": dict(Counter(r.source for r in s.records))}
        for name, s in (("train", tr), ("validation", va), ("test", te))}
    if summary:
        sp.metrics_["steering_direction"] = summary
    seconds["total"] = time.perf_counter() - t0
    sp.metrics_["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return FitResult(sp, lm, tr, va, te, decon, seconds)


def token_features(lm: LoadedModel, split: SplitFeatures, layer: int, settings: FitSettings,
                   fmt: Formatting) -> SplitFeatures:
    """Per-token rows of completions of a split's prompts (the paper's attack-data setting):
    the model's own compliant answers to harmful prompts (unsafe), its refusals and teacher-forced
    refusal continuations (safe), and its answers to harmless prompts (safe)."""
    from .completions import build_completions

    harmful = [r for r in split.records if r.label == 1]
    harmless = [r for r in split.records if r.label == 0]
    comps = build_completions(lm, harmful, harmless, max_new_tokens=settings.max_new_tokens,
                              batch_size=settings.batch_size, seed=settings.seed,
                              formatting=fmt)
    by_id = {(r.source, r.id): r for r in split.records}
    spec = FeatureSpec((layer,), "tokens", fmt)
    feats = extract_features(lm, comps.prompts, spec, responses=comps.responses,
                             batch_size=settings.batch_size)
    assert feats.offsets is not None
    lengths = (feats.offsets[1:] - feats.offsets[:-1]).tolist()
    y = torch.repeat_interleave(torch.tensor(comps.labels, dtype=torch.long),
                                torch.tensor(lengths))
    records = [by_id[(c.source, c.record_id)] for c, n in zip(comps.items, lengths)
               for _ in range(n)]
    return SplitFeatures(records, feats[layer], y)
