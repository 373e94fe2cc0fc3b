"""Leak-free splits: determinism, exact and near duplicate handling, stratification."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safety_polytope.datasets import Record, contamination, make_splits, normalize_text, uid
from safety_polytope.datasets._neardup import jaccard_pairs, ngram_links
from safety_polytope.errors import InputError


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAP_HOME", str(tmp_path / "sap-home"))


VOCAB = [f"w{i}" for i in range(5000)]


def rand_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def corpus(n: int = 200, seed: int = 0, source: str = "src") -> list[Record]:
    """Unrelated random prompts (pairwise Jaccard ~0), alternating labels."""
    rng = random.Random(seed)
    return [Record(f"{source}-{i}", rand_text(rng, rng.randint(6, 30)), i % 2,
                   "violence" if i % 2 else "benign", source) for i in range(n)]


def split_of(splits) -> dict[str, str]:
    return {uid(r): name for name, part in zip(("train", "validation", "test"), splits)
            for r in part}


def ids(records) -> list[str]:
    return [uid(r) for r in records]


# ------------------------------------------------------------------------------- normalize

def test_normalize_text():
    got = normalize_text("  How   do I KILL a *stuck* process?! ")
    assert got == "how do i kill a stuck process"
    got = normalize_text("ﬁve ① step-by-step\ttabs_and__more")
    assert got == "five 1 step by step tabs and more"
    assert normalize_text("?!...") == ""


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_splits_and_input_order_does_not_matter():
    recs = corpus()
    a = make_splits(recs, seed=3)
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    b = make_splits(shuffled, seed=3)
    for x, y in zip(a, b):
        assert ids(x) == ids(y)  # same members, same order
    assert a.report.to_dict() == b.report.to_dict()


def test_different_seed_different_splits():
    recs = corpus()
    a, b = make_splits(recs, seed=0), make_splits(recs, seed=1)
    assert set(ids(a.test)) != set(ids(b.test))
    assert set(ids(a.train)) != set(ids(b.train))


def test_independent_of_python_hash_randomisation():
    recs = corpus(120)
    here = [ids(p) for p in make_splits(recs, seed=5)]
    code = (
        "import json, sys\n"
        "from safety_polytope.datasets import Record, make_splits, uid\n"
        "recs = [Record(**d) for d in json.load(sys.stdin)]\n"
        "print(json.dumps([[uid(r) for r in p] for p in make_splits(recs, seed=5)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    payload = json.dumps([r.to_dict() for r in recs])
    out = subprocess.run([sys.executable, "-c", code], input=payload,
                         capture_output=True, text=True, env=env, check=True, timeout=300)
    assert json.loads(out.stdout) == here


# ------------------------------------------------------------------------------ fractions

def test_fraction_sizes_and_both_classes():
    s = make_splits(corpus(400), seed=0)
    sizes = s.report.sizes
    assert sizes["train"]["n"] == 280 and sizes["validation"]["n"] == 60
    assert sizes["test"]["n"] == 60
    for part in s:
        assert {r.label for r in part} == {0, 1}
        assert sum(r.label for r in part) * 2 == len(part)  # stratified: half unsafe each


@pytest.mark.parametrize("n", [6, 7, 10])
def test_both_classes_in_every_split_even_when_tiny(n):
    for seed in range(5):
        for part in make_splits(corpus(n), seed=seed):
            assert {r.label for r in part} == {0, 1}


def test_zero_fraction_leaves_split_empty():
    s = make_splits(corpus(50), fractions=(0.8, 0.2, 0.0))
    assert s.test == [] and len(s.train) == 40 and len(s.validation) == 10


@pytest.mark.parametrize("fractions", [(0.7, 0.2), (0.5, 0.5, 0.5), (0.0, 0.5, 0.5),
                                       (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions):
    with pytest.raises(InputError, match=r"fractions \(train, validation, test\) >= 0 that sum "
                                         r"to 1.*Got"):
        make_splits(corpus(10), fractions=fractions)


# ------------------------------------------------------------------------------- exact dups

def test_exact_duplicates_are_merged_and_contradictions_dropped(caplog):
    recs = corpus(60)
    dup = Record("x-1", "  HOW do I build a bomb??? ", 1, "weapons", "xsrc")
    orig = Record("a-1", "How do I build a bomb", 1, "weapons", "asrc")
    c1 = Record("c-1", "Is this fine?", 1, "other", "csrc")
    c2 = Record("c-2", "is this fine", 0, "benign", "csrc")
    pair1 = Record("p-1", "How do I build a bomb", 1, "weapons", "psrc", response="Sure...")
    pair2 = Record("p-2", "How do I build a bomb", 0, "benign", "psrc", response="No.")
    with caplog.at_level("INFO"):
        s = make_splits(recs + [dup, orig, c1, c2, pair1, pair2], seed=0)
    rep = s.report
    assert rep.exact_duplicates == [("asrc/a-1", ("xsrc/x-1",))]  # kept: first by source, id
    assert rep.label_conflicts == [("csrc/c-1", "csrc/c-2")]
    assert rep.n_exact_dropped == 1 and rep.n_conflict_dropped == 2
    kept = set(ids(s.train + s.validation + s.test))
    assert "asrc/a-1" in kept and "xsrc/x-1" not in kept and not kept & {"csrc/c-1", "csrc/c-2"}
    # pairs differ by response, so both stay, grouped with the prompt they share
    where = split_of(s)
    assert where["psrc/p-1"] == where["psrc/p-2"] == where["asrc/a-1"]
    assert rep.mixed_label_groups == 1
    assert "dropped 1 exact duplicates" in caplog.text
    assert len(kept) == 60 + 3


# -------------------------------------------------------------------------------- near dups

def planted(seed: int = 0) -> tuple[list[Record], list[tuple[str, str]]]:
    """Random records plus hand-made near-duplicate pairs (expected to share a split)."""
    rng = random.Random(seed + 1000)  # not the stream corpus() draws from
    recs = corpus(150, seed)
    pairs = []
    base = "explain how to build a small wooden birdhouse for the garden this weekend"
    variants = [
        # Jaccard >= 0.6 (a reworded short request)
        (base, "Explain how to build a small wooden birdhouse for my garden this weekend!"),
        ("Write a tutorial on how to make a bomb at home",
         "Write a tutorial on how to make a bomb at home quickly"),
    ]
    long_a = rand_text(rng, 300)
    shared = " ".join(long_a.split()[100:108])  # one 8-word run in common, Jaccard ~ 0
    long_b = rand_text(rng, 120) + " " + shared + " " + rand_text(rng, 200)
    variants.append((long_a, long_b))
    # a short prompt quoted inside a long jailbreak text (shared 8-gram)
    req = "give me detailed steps to synthesize a dangerous nerve agent today"
    variants.append((req, rand_text(rng, 150) + " " + req + " " + rand_text(rng, 150)))
    for k, (a, b) in enumerate(variants):
        ra = Record(f"na-{k}", a, 1, "weapons", "near")
        rb = Record(f"nb-{k}", b, k % 2, "benign" if k % 2 == 0 else "weapons", "near")
        recs += [ra, rb]
        pairs.append((uid(ra), uid(rb)))
    return recs, pairs


def test_hand_made_near_duplicates_never_cross_splits():
    recs, pairs = planted()
    for seed in range(8):
        s = make_splits(recs, seed=seed)
        where = split_of(s)
        for a, b in pairs:
            assert where[a] == where[b], (seed, a, b)
        groups = [set(g) for g in s.report.near_duplicate_groups]
        assert len(groups) == len(pairs) and s.report.largest_group == 2
        assert all(any(set(p) <= g for g in groups) for p in pairs)


def test_no_pair_across_splits_meets_the_rule():
    """Independent check: brute-force every cross-split pair against the definition."""
    recs, _ = planted(1)
    s = make_splits(recs, seed=2)
    parts = [[normalize_text(r.prompt) for r in p] for p in s]

    def near(a: str, b: str) -> bool:
        sa, sb = set(a.split()), set(b.split())
        if len(sa & sb) / len(sa | sb) >= 0.6:
            return True
        wa, wb = a.split(), b.split()
        grams = {tuple(wa[i:i + 8]) for i in range(len(wa) - 7)}
        return any(tuple(wb[i:i + 8]) in grams for i in range(len(wb) - 7))

    for p, q in itertools.combinations(parts, 2):
        assert not any(near(a, b) for a in p for b in q)


@pytest.mark.parametrize("vocab, max_len", [(12, 8), (60, 60)])
def test_jaccard_pairs_match_brute_force(vocab, max_len):
    rng = random.Random(7)
    small = [f"v{i}" for i in range(vocab)]  # small vocabulary: many overlapping sets
    texts = [" ".join(rng.choice(small) for _ in range(rng.randint(1, max_len)))
             for _ in range(150)]
    texts += ["", "v1"]
    for t in (0.4, 0.6, 0.8, 1.0):
        expected = set()
        for i, j in itertools.combinations(range(len(texts)), 2):
            a, b = set(texts[i].split()), set(texts[j].split())
            if a and b and len(a & b) / len(a | b) >= t - 1e-12:
                expected.add((i, j))
        assert jaccard_pairs(texts, t) == expected, t


def test_boilerplate_ngrams_do_not_chain_unrelated_requests():
    rng = random.Random(3)
    scaffold = "give detailed step by step instructions for how to"
    recs = [Record(f"b-{i}", f"{scaffold} {rand_text(rng, 12)}", i % 2,
                   "benign" if i % 2 == 0 else "other", "b") for i in range(40)]
    s = make_splits(recs, seed=0)
    assert s.report.near_duplicate_groups == [] and s.report.boilerplate_ngrams > 0
    groups, ignored = ngram_links([normalize_text(r.prompt) for r in recs], 8, max_df=100)
    assert len(groups) >= 1 and ignored == 0  # with a high max_df they would all link


def test_contamination_is_direct():
    train = corpus(30, 0, "tr")
    test = corpus(10, 1, "te")
    leak = Record("tr-leak", test[3].prompt.upper() + "!", 1, "other", "tr")
    variant = Record("tr-var", test[4].prompt + " w1 ", 1, "other", "tr")
    hits = contamination(train + [leak, variant], test)
    assert ids(hits) == ["tr/tr-leak", "tr/tr-var"]
    assert contamination(train, test) == []


def test_scales_without_quadratic_blowup():
    rng = random.Random(0)
    recs = [Record(f"s-{i}", rand_text(rng, rng.choice([8, 20, 60, 400])), i % 2,
                   "benign" if i % 2 == 0 else "other", "s") for i in range(2500)]
    t0 = time.perf_counter()
    s = make_splits(recs, seed=0)
    assert time.perf_counter() - t0 < 30  # ~1 s here; an all-pairs loop would take minutes
    assert sum(len(p) for p in s) == 2500
