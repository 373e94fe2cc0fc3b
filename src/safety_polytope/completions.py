"""Token-level training material: the model's own completions, sorted by the refusal detector.

The paper trains token-level polytopes on what the model itself says after harmful prompts, not
on someone else's text: those are the states steering must recognise. Four kinds come out
(labels: **1 = unsafe, 0 = safe**):

- ``compliant`` (1): the model's greedy completion of a harmful prompt that is not a refusal;
- ``refused`` (0): the same, when it is a refusal;
- ``refusal_forced`` (0): refusal texts from ``refusal.REFUSAL_CONTINUATIONS`` placed after the
  same harmful prompts (teacher forcing), so refusal states exist even for a model that
  almost never refuses (SmolLM2-135M refuses none of the first 40 AdvBench prompts);
- ``harmless_answer`` (0): the model's completions of harmless prompts.

Degenerate generations (empty, no letters, mostly repeated word 3-grams) are dropped and
counted. Generation is the slow part, so the raw generations are cached as JSONL under
``$SAP_HOME/completions/<key>.jsonl`` (written atomically), keyed by the model, the prompts and
the generation settings. Kinds are derived on every call, so an improved refusal detector or
another ``seed`` for the forced refusals needs no new generation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import generation
from ._io import atomic_path, sap_home
from .datasets.records import SAFE, UNSAFE, Record
from .errors import InputError
from .features.cache import weights_digest
from .features.formatting import Formatting
from .generation import DEFAULT_FORMATTING
from .lm import LoadedModel
from .refusal import DETECTOR_VERSION, REFUSAL_CONTINUATIONS, is_refusal

logger = logging.getLogger(__name__)

#: Bump when the cache file layout or what a cached generation means changes.
COMPLETIONS_FORMAT = 1

Kind = Literal["compliant", "refused", "refusal_forced", "harmless_answer"]
KINDS: tuple[str, ...] = ("compliant", "refused", "refusal_forced", "harmless_answer")
LABELS: dict[str, int] = {"compliant": UNSAFE, "refused": SAFE, "refusal_forced": SAFE,
                          "harmless_answer": SAFE}


@dataclass(frozen=True)
class Completion:
    """One prompt + response pair for token-level training; ``label``: 1 = unsafe, 0 = safe."""

    record_id: str
    prompt: str
    response: str
    label: int
    kind: Kind
    category: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CompletionSet:
    """The completions of ``build_completions``, in order: for each harmful record its own
    completion (if not dropped) then its forced refusals, then the harmless records' answers.

    Behaves like a read-only list of ``Completion``.
    """

    items: tuple[Completion, ...]
    dropped: Mapping[str, int] = field(default_factory=dict)  # degenerate, by prompt role
    key: str | None = None  # the generation cache entry, None when not cached

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Completion]:
        return iter(self.items)

    def __getitem__(self, i: int) -> Completion:
        return self.items[i]

    def of_kind(self, *kinds: str) -> list[Completion]:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise InputError(f"Unknown completion kind(s) {sorted(unknown)}; the kinds are "
                             f"{', '.join(KINDS)}.")
        return [c for c in self.items if c.kind in kinds]

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.items]

    @property
    def responses(self) -> list[str]:
        return [c.response for c in self.items]

    @property
    def labels(self) -> list[int]:
        return [c.label for c in self.items]

    def summary(self) -> dict[str, Any]:
        """Counts per kind, degenerate generations dropped, and the model's refusal rate on
        the harmful prompts whose completion was kept."""
        counts: Counter[str] = Counter(c.kind for c in self.items)
        out: dict[str, Any] = {kind: counts.get(kind, 0) for kind in KINDS}
        out["total"] = len(self.items)
        out["dropped_degenerate"] = sum(self.dropped.values())
        own = out["compliant"] + out["refused"]
        out["refusal_rate"] = out["refused"] / own if own else 0.0
        return out


_WORDS = re.compile(r"\w+")
_ALNUM = re.compile(r"[^\W_]")


def is_degenerate(text: str, min_distinct: float = 0.5) -> bool:
    """Empty, letter-free, or looping text (fewer than ``min_distinct`` of its word 3-grams are
    distinct): not a meaningful answer, so neither "compliant" nor "refused"."""
    if not text or not _ALNUM.search(text):
        return True
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(grams) >= 6 and len(set(grams)) / len(grams) < min_distinct


def completions_dir() -> Path:
    return sap_home() / "completions"


def _records_digest(records: Sequence[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(r.id.encode("utf-8", "surrogatepass") + b"\x00")
        h.update(r.prompt.encode("utf-8", "surrogatepass") + b"\x01")
    return h.hexdigest()


def cache_key(lm: LoadedModel, harmful: Sequence[Record], harmless: Sequence[Record], *,
              max_new_tokens: int, formatting: Formatting) -> tuple[str, dict[str, Any]]:
    """Key and description of a generation cache entry: everything the raw generations depend
    on (not the seed or the detector, which only act after generation)."""
    desc = {
        "format": COMPLETIONS_FORMAT,
        "model": lm.fingerprint,
        "weights": weights_digest(lm),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "formatting": formatting.to_dict(),
        "decoding": "greedy",
        "max_new_tokens": max_new_tokens,
        "stop_token_ids": generation.stop_token_ids(lm),
        "harmful": _records_digest(harmful),
        "harmless": _records_digest(harmless),
        "n_harmful": len(harmful),
        "n_harmless": len(harmless),
    }
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]
    return key, desc


def _read_cache(path: Path, key: str, records: Sequence[Record]) -> list[str] | None:
    """The cached generations if ``path`` is a complete entry for exactly these records."""
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            header = json.loads(f.readline())
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable completions cache %s (%s); generating again",
                       path.name, exc)
        return None
    ids = [r.id for r in records]
    if header.get("key") != key or [row.get("record_id") for row in rows] != ids or \
            not all(isinstance(row.get("response"), str) for row in rows):
        logger.warning("Ignoring completions cache %s: it does not match these prompts; "
                       "generating again", path.name)
        return None
    return [row["response"] for row in rows]


def _write_cache(path: Path, key: str, desc: dict[str, Any], records: Sequence[Record],
                 roles: Sequence[str], responses: Sequence[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"key": key, **desc}, sort_keys=True) + "\n")
        f.writelines(
            json.dumps({"record_id": r.id, "role": role, "prompt": r.prompt, "response": resp},
                       ensure_ascii=False) + "\n"
            for r, role, resp in zip(records, roles, responses))


def _check_records(records: Sequence[Record], label: int, name: str) -> None:
    for r in records:
        if not isinstance(r, Record):
            raise InputError(f"{name} must be a list of datasets.Record; got {type(r).__name__}.")
        if r.label != label:
            what = "unsafe (label 1)" if label == UNSAFE else "safe (label 0)"
            raise InputError(f"{name} record {r.id!r} from {r.source!r} has label {r.label}, but "
                             f"every {name} record must be {what}; pass it in the other list.")


def forced_refusals(record: Record, seed: int, k: int) -> list[str]:
    """``k`` distinct phrasings of ``REFUSAL_CONTINUATIONS`` for ``record``, chosen by ``seed``
    and the record alone (not its position), so adding records leaves the others' choice."""
    rng = random.Random(f"{seed}\x00{record.id}\x00{record.prompt}")
    return [REFUSAL_CONTINUATIONS[i] for i in rng.sample(range(len(REFUSAL_CONTINUATIONS)), k)]


def build_completions(
    lm: LoadedModel,
    harmful: Sequence[Record],
    harmless: Sequence[Record],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    seed: int = 0,
    refusals_per_prompt: int = 1,
    formatting: Formatting = DEFAULT_FORMATTING,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> CompletionSet:
    """Generate (or load) the model's greedy completions and sort them into the four kinds.

    ``harmful`` records must be unsafe (label 1) and ``harmless`` safe (label 0). Each harmful
    prompt also gets ``refusals_per_prompt`` teacher-forced refusals, chosen by ``seed``. The
    raw generations are cached under ``cache_dir`` (default ``$SAP_HOME/completions``); a
    second call with the same model, prompts and settings generates nothing.
    Raises ``InputError`` for mislabelled records or bad settings.

    >>> cs = build_completions(lm, load_source("advbench")[:40], harmless)  # doctest: +SKIP
    >>> cs.summary()  # doctest: +SKIP
    {'compliant': 37, 'refused': 0, 'refusal_forced': 40, 'harmless_answer': 40, ...}
    """
    harmful, harmless = list(harmful), list(harmless)
    _check_records(harmful, UNSAFE, "harmful")
    _check_records(harmless, SAFE, "harmless")
    if not harmful and not harmless:
        raise InputError("build_completions needs at least one harmful or harmless record; "
                         "got two empty lists.")
    n_phrasings = len(REFUSAL_CONTINUATIONS)
    if isinstance(refusals_per_prompt, bool) or not isinstance(refusals_per_prompt, int) or \
            not 0 <= refusals_per_prompt <= n_phrasings:
        raise InputError(f"refusals_per_prompt must be an int from 0 to {n_phrasings} (the "
                         f"number of REFUSAL_CONTINUATIONS); got {refusals_per_prompt!r}.")

    records = harmful + harmless
    roles = ["harmful"] * len(harmful) + ["harmless"] * len(harmless)
    key, desc = cache_key(lm, harmful, harmless, max_new_tokens=max_new_tokens,
                          formatting=formatting)
    path = Path(cache_dir if cache_dir is not None else completions_dir()) / f"{key}.jsonl"
    responses = _read_cache(path, key, records) if use_cache else None
    if responses is not None:
        logger.info("Loaded %d cached generations from %s", len(responses), path)
    else:
        responses = generation.generate_batch(
            lm, [r.prompt for r in records], max_new_tokens=max_new_tokens,
            batch_size=batch_size, temperature=0.0, seed=seed, formatting=formatting,
            show_progress=show_progress)
        if use_cache:
            _write_cache(path, key, desc, records, roles, responses)

    items: list[Completion] = []
    dropped: Counter[str] = Counter()

    def add(r: Record, response: str, kind: Kind) -> None:
        items.append(Completion(record_id=r.id, prompt=r.prompt, response=response,
                                label=LABELS[kind], kind=kind, category=r.category,
                                source=r.source))

    for r, role, resp in zip(records, roles, responses):
        if is_degenerate(resp):
            dropped[role] += 1
        elif role == "harmless":
            add(r, resp, "harmless_answer")
        else:
            add(r, resp, "refused" if is_refusal(resp) else "compliant")
        if role == "harmful":
            for text in forced_refusals(r, seed, refusals_per_prompt):
                add(r, text, "refusal_forced")
    result = CompletionSet(items=tuple(items), dropped=dict(dropped),
                           key=key if use_cache else None)
    if dropped:
        logger.info("Dropped %d degenerate generations (%d of %d harmful, %d of %d harmless "
                    "prompts)", sum(dropped.values()), dropped["harmful"], len(harmful),
                    dropped["harmless"], len(harmless))
    logger.info("Completions (refusal detector v%d): %s", DETECTOR_VERSION, result.summary())
    return result
