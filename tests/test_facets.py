"""Facet interpretation: MI against scikit-learn, polarity, Hungarian naming, purity, geometry."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from safety_polytope.errors import InputError
from safety_polytope.evaluation.facets import (
    MIXED,
    apply_facet_names,
    category_columns,
    facet_category_mi,
    facet_cosine,
    facet_table,
    facet_table_from_violations,
    match_facets,
    plot_heatmap,
    plot_stored_heatmap,
    stored_facets,
    top_examples,
)
from safety_polytope.polytope import SafetyPolytope

CATS = ["weapons", "drugs", "cybercrime", "fraud"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _entropy_bits(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mi_equals_sklearn_in_bits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, K = 300, 5
    y = rng.integers(0, 2, n)
    cats = rng.choice(CATS + ["benign"], n).tolist()
    violated = rng.random((n, K)) < rng.random(K)  # facets with different firing rates
    violated[:, 0] = False  # a facet that never fires: MI 0
    violated[:, 1] = y.astype(bool) & (np.asarray(cats) == "drugs")  # a perfect facet
    mi = facet_category_mi(violated, y, cats, CATS)
    assert mi.shape == (K, len(CATS))
    for k in range(K):
        for j, c in enumerate(CATS):
            member = (y == 1) & (np.asarray(cats) == c)
            expected = mutual_info_score(violated[:, k], member) / math.log(2)
            assert mi[k, j] == pytest.approx(expected, abs=1e-12)
    assert np.all(mi[0] == 0)
    p = violated[:, 1].mean()
    assert mi[1, CATS.index("drugs")] == pytest.approx(_entropy_bits(p))


def test_mi_accepts_tensors_and_default_columns_in_taxonomy_order() -> None:
    y = torch.tensor([1, 1, 1, 0, 0])
    cats = ["fraud", "weapons", "zzz_custom", "weapons", None]
    assert category_columns(cats, y) == ["weapons", "fraud", "zzz_custom"]
    mi = facet_category_mi(torch.tensor([[True], [False], [False], [False], [True]]), y, cats)
    assert mi.shape == (1, 3)


def test_safe_examples_are_never_category_members() -> None:
    """The polarity the reference got backwards: labelling safe rows 'weapons' changes nothing,
    and a facet that fires on *safe* weapons-labelled rows is not a weapons facet."""
    rng = np.random.default_rng(0)
    n = 400
    y = np.r_[np.ones(200, int), np.zeros(200, int)]
    unsafe_cats = rng.choice(CATS, 200).tolist()
    violated = rng.random((n, 3)) < 0.3
    as_benign = facet_category_mi(violated, y, unsafe_cats + ["benign"] * 200, CATS)
    as_weapons = facet_category_mi(violated, y, unsafe_cats + ["weapons"] * 200, CATS)
    np.testing.assert_array_equal(as_benign, as_weapons)

    # Facet 0 fires exactly on the safe rows labelled weapons.
    safe_cats = ["weapons"] * 100 + ["benign"] * 100
    cats = unsafe_cats + safe_cats
    fires = np.zeros((n, 1), bool)
    fires[200:300, 0] = True
    naive = np.asarray(cats) == "weapons"  # membership ignoring the label (the wrong polarity)
    assert mutual_info_score(fires[:, 0], naive) > 0.1  # the data do exercise the difference
    pos = facet_category_mi(fires, y, cats, CATS, positive_only=True)
    assert pos.max() == 0.0  # no positive association with any unsafe category
    rows = facet_table_from_violations(np.where(fires, 1.0, -1.0), y, cats)
    assert rows[0].category == MIXED and rows[0].name == MIXED


def test_naming_needs_enrichment_among_unsafe_examples() -> None:
    """A facet that fires on every unsafe example (a generalist) has large MI with each
    category, and one that fires on every unsafe example except weapons has MI with weapons:
    neither is about that category, so positive MI is 0 and they are not named after it."""
    cats = ["weapons"] * 30 + ["drugs"] * 30 + ["benign"] * 60
    y = np.r_[np.ones(60, int), np.zeros(60, int)]
    v = -np.ones((120, 3))
    v[:60, 0] = 1.0  # every unsafe example
    v[30:60, 1] = 1.0  # unsafe, except weapons
    v[:30, 2] = 1.0  # weapons only
    raw = facet_category_mi(v > 0, y, cats, ["weapons", "drugs"])
    pos = facet_category_mi(v > 0, y, cats, ["weapons", "drugs"], positive_only=True)
    assert raw[0, 0] > 0.3 and raw[0, 1] > 0.3 and raw[1, 0] > 0.1
    assert pos[0].tolist() == [0.0, 0.0] and pos[1, 0] == 0.0 and pos[1, 1] == raw[1, 1]
    rows = facet_table_from_violations(v, y, cats)
    assert [r.name for r in rows] == [MIXED, "drugs", "weapons"]


def _perfect_case(perm: list[int], n_per: list[int], n_safe: int = 50):
    """Unsafe rows of category c violate only facet perm^-1(c) (v = +1 there, -1 elsewhere)."""
    cats: list[str] = []
    for c, m in zip(CATS, n_per):
        cats += [c] * m
    n_unsafe = len(cats)
    cats += ["benign"] * n_safe
    y = np.r_[np.ones(n_unsafe, int), np.zeros(n_safe, int)]
    K = len(perm)
    v = -np.ones((len(cats), K))
    for k, c in enumerate(perm):
        v[: n_unsafe][np.asarray(cats[:n_unsafe]) == CATS[c], k] = 1.0
    return v, y, cats


def test_hungarian_naming_recovers_the_permutation_with_purity_one() -> None:
    perm = [2, 0, 3, 1]  # facet k fires exactly for category CATS[perm[k]]
    n_per = [10, 20, 30, 40]
    v, y, cats = _perfect_case(perm, n_per)
    texts = [f"text {i}" for i in range(len(cats))]
    rows = facet_table_from_violations(v, y, cats, texts)
    assert [r.name for r in rows] == [CATS[c] for c in perm]
    assert [r.category for r in rows] == [CATS[c] for c in perm]
    assert all(r.matched for r in rows)
    n_unsafe = sum(n_per)
    for r, c in zip(rows, perm):
        assert r.purity == 1.0
        assert r.chance == pytest.approx(n_per[c] / n_unsafe)
        assert r.share == pytest.approx(n_per[c] / n_unsafe)
        assert r.n_assigned == r.n_violated == n_per[c]
        assert r.mi == pytest.approx(_entropy_bits(n_per[c] / len(cats)))
        # Top examples: texts of violating unsafe rows only, at most 5.
        assert len(r.top_examples) == 5
        assert all(cats[int(t.split()[1])] == CATS[c] for t, _ in r.top_examples)


def test_more_facets_than_categories_get_suffixes_and_mixed() -> None:
    # Facets 0 and 3 both fire for weapons (3 on half of them), facet 1 for drugs,
    # facet 2 on random rows, facet 4 never.
    rng = np.random.default_rng(0)
    cats = ["weapons"] * 40 + ["drugs"] * 40 + ["benign"] * 80
    y = np.r_[np.ones(80, int), np.zeros(80, int)]
    v = -np.ones((160, 5))
    v[:40, 0] = 2.0
    v[:20, 3] = 1.0
    v[40:80, 1] = 1.0
    v[rng.random(160) < 0.5, 2] = 0.5
    rows = facet_table_from_violations(v, y, cats, min_mi=0.01)
    names = [r.name for r in rows]
    assert names[0] == "weapons" and names[1] == "drugs" and names[3] == "weapons_2"
    assert rows[3].category == "weapons" and not rows[3].matched
    assert rows[4].name.startswith(MIXED) and rows[4].purity is None
    assert len(set(names)) == 5
    # Facet 3 never wins the argmax (facet 0 has v = 2 there): no assigned examples.
    assert rows[3].n_assigned == 0 and rows[3].purity is None and rows[3].n_violated == 20


def test_fewer_facets_than_categories() -> None:
    v, y, cats = _perfect_case([3, 1], [10, 20, 30, 40])
    rows = facet_table_from_violations(v, y, cats)
    assert [r.name for r in rows] == ["fraud", "drugs"]


def test_matching_is_optimal_not_greedy() -> None:
    # Greedy (largest entry first) takes (0, a) then (1, b): 0.9 + 0.1; optimal: 0.8 + 0.7.
    m = match_facets(np.array([[0.9, 0.8], [0.7, 0.1]]), ["a", "b"])
    assert m.names == ["b", "a"] and m.matched == [True, True]
    m = match_facets(np.array([[0.0, 0.0], [0.5, 0.0]]), ["a", "b"], min_mi=0.01)
    assert m.categories == [MIXED, "a"]


def test_mi_input_errors() -> None:
    with pytest.raises(InputError, match="boolean"):
        facet_category_mi(np.array([[0.3, 0.7]]), [1], ["weapons"])
    with pytest.raises(InputError, match="one label per example"):
        facet_category_mi(np.zeros((3, 2), bool), [1, 0], ["a", "b", "c"])
    with pytest.raises(InputError, match="one category"):
        facet_category_mi(np.zeros((3, 2), bool), [1, 0, 1], ["a", "b"])
    with pytest.raises(InputError, match="unsafe examples"):
        facet_table_from_violations(np.zeros((3, 2)), [0, 0, 0], ["a", "b", "c"])


# --------------------------------------------------------------------------- with a polytope


def _fitted(encoder: str = "identity", K: int = 3, **kw) -> SafetyPolytope:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 6, generator=g)
    y = (X[:, 0] > 0.5).long()
    return SafetyPolytope(n_facets=K, encoder=encoder, epochs=3, **kw).fit(X, y)


def test_facet_cosine_identical_orthogonal_opposite() -> None:
    sp = _fitted(K=4)
    phi = torch.zeros(4, 6)
    phi[0, 0] = 1.0
    phi[1, 0] = 3.0  # same direction, other length
    phi[2, 1] = 2.0  # orthogonal
    phi[3, 0] = -0.5  # opposite
    sp.facets_ = phi
    cos = facet_cosine(sp)
    assert cos.shape == (4, 4)
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-12)
    assert cos[0, 1] == pytest.approx(1.0)
    assert cos[0, 2] == pytest.approx(0.0)
    assert cos[0, 3] == pytest.approx(-1.0)
    # Hidden space folds the standardisation in: Phi / scale, compared by hand.
    hidden = facet_cosine(sp, "hidden")
    folded = (phi / sp.scale_).double()
    u = folded / folded.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(hidden, (u @ u.T).numpy(), atol=1e-12)


def test_facet_cosine_hidden_needs_identity() -> None:
    sp = _fitted(encoder="relu", n_features=8)
    assert facet_cosine(sp).shape == (3, 3)
    with pytest.raises(InputError, match="identity encoder"):
        facet_cosine(sp, "hidden")


def test_top_examples_only_unsafe_and_violating_sorted() -> None:
    sp = _fitted(K=1)
    sp.facets_ = torch.zeros(1, 6)
    sp.facets_[0, 0] = 1.0
    sp.offsets_ = torch.zeros(1)
    sp.mean_, sp.scale_ = torch.zeros(6), torch.ones(6)
    X = torch.zeros(5, 6)
    X[:, 0] = torch.tensor([3.0, 1.0, 5.0, -1.0, 2.0])
    y = [1, 1, 0, 1, 1]  # the largest violation (row 2) is safe
    texts = ["a", "b", "c", "d", "e"]
    top = top_examples(sp, X, texts, k=2, y=y)
    assert [t for t, _ in top[0]] == ["a", "e"]
    assert [v for _, v in top[0]] == pytest.approx([3.0, 2.0])
    assert [t for t, _ in top_examples(sp, X, texts, k=10)[0]] == ["c", "a", "e", "b"]


def test_facet_table_on_a_polytope_and_round_trip(tmp_path) -> None:
    """Three unsafe clusters, one per category, and a polytope whose facet k is the half-space
    x_perm[k] > 3: the table names facet k after the perm[k]-th cluster with purity 1."""
    g = torch.Generator().manual_seed(0)
    cats3 = ["weapons", "drugs", "fraud"]
    X_unsafe = torch.randn(180, 8, generator=g)
    for i in range(3):
        X_unsafe[60 * i:60 * (i + 1), i] += 6.0
    X = torch.cat([X_unsafe, torch.randn(180, 8, generator=g)])
    y = torch.cat([torch.ones(180), torch.zeros(180)]).long()
    cats = [c for c in cats3 for _ in range(60)] + ["benign"] * 180
    texts = [f"{c} #{i}" for i, c in enumerate(cats)]
    sp = SafetyPolytope(n_facets=3, encoder="identity", epochs=2, seed=0).fit(X, y, cats)
    perm = [1, 2, 0]
    sp.facets_ = torch.eye(8)[perm]
    sp.offsets_ = torch.full((3,), 3.0)
    sp.mean_, sp.scale_ = torch.zeros(8), torch.ones(8)
    rows = facet_table(sp, X, y, cats, texts)
    assert [r.name for r in rows] == [cats3[i] for i in perm]
    for r in rows:
        assert r.purity == 1.0 and r.chance == pytest.approx(1 / 3)
        assert r.share == pytest.approx(1 / 3)
        assert [t.split()[0] for t, _ in r.top_examples] == [r.category] * 5
    # facet_table is facet_table_from_violations on the polytope's violations and thresholds.
    assert rows == facet_table_from_violations(sp.violations(X), y, cats, texts,
                                               sp.facet_thresholds_)

    apply_facet_names(sp, rows)
    assert sp.facet_names_ == [r.name for r in rows]
    stored = sp.metrics_["facets"]
    assert stored["units"] == "bits" and stored["categories"] == ["weapons", "drugs", "fraud"]
    json.dumps(stored, allow_nan=False)
    # The order puts facets in category order: a diagonal heatmap.
    assert [rows[k].category for k in stored["order"]] == cats3
    sp.save_pretrained(tmp_path / "p")
    loaded = SafetyPolytope.from_pretrained(tmp_path / "p")
    back, _ = stored_facets(loaded)
    assert back == rows
    assert loaded.facet_names_ == sp.facet_names_
    png = plot_stored_heatmap(loaded, tmp_path / "plots" / "mi.png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_apply_facet_names_checks_rows() -> None:
    sp = _fitted(K=2)
    v, y, cats = _perfect_case([0], [10, 0, 0, 0])
    rows = facet_table_from_violations(v, y, cats)
    with pytest.raises(InputError, match="each of the 2 facets"):
        apply_facet_names(sp, rows)
    with pytest.raises(InputError, match="no facet table"):
        stored_facets(sp)


def test_plot_heatmap_writes_png_and_checks_shape(tmp_path) -> None:
    out = plot_heatmap(np.random.default_rng(0).random((3, 4)), ["a", "b", "c"], CATS,
                       tmp_path / "h.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(InputError, match="expected \\(2, 4\\)"):
        plot_heatmap(np.zeros((3, 4)), ["a", "b"], CATS, tmp_path / "x.png")


def test_plot_heatmap_without_matplotlib_says_how_to_install(tmp_path, monkeypatch) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"safety-polytope\[plot\]"):
        plot_heatmap(np.zeros((1, 1)), ["a"], ["b"], tmp_path / "h.png")
