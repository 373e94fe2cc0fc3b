"""Facet interpretation: which harm category each facet of a fitted polytope stands for.

A facet earns a category name only if the data say so. Three figures support the name:

* **MI**, in **bits** (log base 2), between "facet k is violated" (``v_k > t_k``) and the
  indicator "the example is *unsafe and* of category c", over all examples (safe and unsafe).
  Safe examples are never category members, whatever category they carry: a harmless question
  about knives must not make the weapons facet look like a weapons facet. (The reference
  analysis put this polarity the other way round.) MI is blind to the sign of the association
  (a facet violated by everything *except* weapons has MI with weapons too), and a facet that
  fires on every unsafe example has the same MI with every category. So for naming, MI counts
  only where the facet is *enriched* in c among unsafe examples (the share of c among the unsafe
  examples violating it exceeds c's share of all unsafe examples); elsewhere it is 0
  ("positive MI").
* **purity**: among unsafe examples *assigned* to facet k (``argmax_k (v_k - t_k)``, the facet
  they violate most, as in training), the share whose category is k's named category;
* **chance**: that category's share of all unsafe examples. A specialised facet has purity well
  above chance; a facet with purity close to chance is not about its category.

Names come from a Hungarian matching of facets to categories on positive MI (one facet per
category, optimal in total MI rather than greedy). Facets left over (K > C) take the category
of their largest positive MI and a suffix (``weapons_2``); a facet whose best positive MI is at
the noise floor is ``mixed``. ``facet_table`` computes everything; ``apply_facet_names`` writes
the names into the polytope and stores the table (plain JSON) in ``metrics_["facets"]``, which
``sap inspect`` prints.

>>> rows = facet_table(polytope, X_train, y_train, categories, texts)  # doctest: +SKIP
>>> apply_facet_names(polytope, rows).save_pretrained("out/")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..datasets.taxonomy import BENIGN, HARM_CATEGORIES
from ..errors import InputError

if TYPE_CHECKING:
    from ..polytope import SafetyPolytope

logger = logging.getLogger(__name__)

ArrayLike = Any  # np.ndarray | torch.Tensor | Sequence
MIXED = "mixed"
UNITS = "bits"
TABLE_VERSION = 1
DEFINITIONS = {
    "mi": "mutual information (bits) between 'facet violated' (v_k > t_k) and 'unsafe and of "
          "category c', over all examples; 0 unless the unsafe examples violating the facet "
          "are enriched in c",
    "purity": "share of the unsafe examples assigned to the facet (argmax_k v_k - t_k) that are "
              "of the facet's category",
    "chance": "share of all unsafe examples that are of the facet's category",
    "share": "share of all unsafe examples assigned to the facet",
}


# --------------------------------------------------------------------------- input checks


def _np(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be an array; could not convert it: {e}") from None


def _as_violated(violated: ArrayLike) -> np.ndarray:
    a = _np(violated, "violated")
    if a.ndim != 2:
        raise InputError(f"violated must be 2-D (n examples, K facets), e.g. "
                         f"polytope.predict_facets(X); got shape {a.shape}.")
    if a.dtype != bool:
        if a.dtype.kind not in "biu" or not np.isin(a, (0, 1)).all():
            raise InputError(f"violated must be boolean (or 0/1); got dtype {a.dtype}. Pass "
                             f"polytope.predict_facets(X), not the raw violations.")
        a = a.astype(bool)
    return a


def _as_unsafe(y: ArrayLike, n: int) -> np.ndarray:
    a = _np(y, "y")
    if a.ndim != 1 or a.shape[0] != n:
        raise InputError(f"y must be 1-D with one label per example ({n}); got shape {a.shape}.")
    if not np.isin(a, (0, 1)).all():
        raise InputError(f"y must hold labels 0 (safe) and 1 (unsafe); got values "
                         f"{sorted(set(np.unique(a).tolist()))[:5]}.")
    return a.astype(bool)


def _as_cats(categories: Sequence[Any], n: int) -> np.ndarray:
    if isinstance(categories, (str, bytes)):
        raise InputError("categories must hold one category per example; got a single string.")
    cats = ["" if c is None else str(c) for c in categories]
    if len(cats) != n:
        raise InputError(f"categories has {len(cats)} entries but there are {n} examples; pass "
                         f"one category (or None) per example.")
    return np.asarray(cats, dtype=object)


def category_columns(categories: Sequence[str], unsafe: ArrayLike) -> list[str]:
    """The categories of the unsafe examples, in taxonomy order, then any others sorted.

    Empty categories and ``"benign"`` are never columns.
    """
    present = {str(c) for c, u in zip(categories, _np(unsafe, "y").astype(bool)) if u}
    present -= {"", "None", BENIGN}
    return [c for c in HARM_CATEGORIES if c in present] + sorted(present - set(HARM_CATEGORIES))


# --------------------------------------------------------------------------- mutual information


def facet_category_mi(violated: ArrayLike, y: ArrayLike, categories: Sequence[Any],
                      names: Sequence[str] | None = None, *, positive_only: bool = False
                      ) -> np.ndarray:
    """MI in bits between "facet k violated" and "unsafe and of category c": ``(K, C)``.

    ``violated`` is ``(n, K)`` bool (``polytope.predict_facets(X)``), ``y`` ``(n,)`` with
    1 = unsafe, ``categories`` one label per example (a safe example's label is ignored: it is
    never a member). ``names`` fixes the columns (default: ``category_columns``). With
    ``positive_only``, an entry is 0 unless the facet is enriched in c among unsafe examples:
    ``#(violated, c) / #(violated, unsafe) > #c / #unsafe``. Without it, each entry equals
    ``sklearn.metrics.mutual_info_score(violated[:, k], member_c) / ln 2``.
    """
    v = _as_violated(violated)
    n = v.shape[0]
    unsafe = _as_unsafe(y, n)
    cats = _as_cats(categories, n)
    cols = list(names) if names is not None else category_columns(list(cats), unsafe)
    member = np.stack([unsafe & (cats == c) for c in cols], axis=1) if cols else \
        np.zeros((n, 0), dtype=bool)
    mi = _mi_bits(v, member)
    if positive_only:
        n11 = v.T.astype(np.float64) @ member.astype(np.float64)  # (K, C) violated members
        v_unsafe = (v & unsafe[:, None]).sum(0).astype(np.float64)[:, None]  # (K, 1)
        n_c = member.sum(0).astype(np.float64)[None, :]  # (1, C)
        mi = np.where(n11 * unsafe.sum() > v_unsafe * n_c, mi, 0.0)
    return mi


def _mi_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MI (bits) of every column of bool ``a`` (n, K) with every column of bool ``b`` (n, C)."""
    n = a.shape[0]
    if n == 0:
        return np.zeros((a.shape[1], b.shape[1]))
    af, bf = a.astype(np.float64), b.astype(np.float64)
    n11 = af.T @ bf  # (K, C)
    na = af.sum(0)[:, None]
    nb = bf.sum(0)[None, :]
    cells = ((n11, na, nb), (na - n11, na, n - nb), (nb - n11, n - na, nb),
             (n - na - nb + n11, n - na, n - nb))
    mi = np.zeros_like(n11)
    for joint, ma, mb in cells:  # sum over the 2x2 table; 0 log 0 = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            term = joint / n * np.log2(joint * n / (ma * mb))
        mi += np.where(joint > 0, term, 0.0)
    return np.maximum(mi, 0.0)  # rounding can give -1e-17


def noise_floor(n: int) -> float:
    """The MI (bits) two *independent* binary variables show on ``n`` examples on average,
    ``1 / (2 n ln 2)`` (first-order bias of the plug-in estimate): below it, MI means nothing."""
    return 1.0 / (2.0 * max(n, 1) * math.log(2.0))


# --------------------------------------------------------------------------- matching and names


@dataclass(frozen=True)
class FacetMatch:
    """Per facet: its category (``"mixed"`` when none), whether the Hungarian matching chose it
    (``False``: the facet's best category, shared with a matched facet) and its unique name."""

    categories: list[str]
    matched: list[bool]
    names: list[str]


def match_facets(mi: ArrayLike, categories: Sequence[str], min_mi: float = 0.0) -> FacetMatch:
    """Name facets by a maximum-total-MI one-to-one matching to categories.

    ``mi`` is ``(K, C)`` (use positive MI). ``min(K, C)`` pairs are matched with
    ``scipy.optimize.linear_sum_assignment``; a facet without a pair takes its largest-MI
    category. Any facet whose MI with its category is ``<= min_mi`` is ``"mixed"``. Duplicate
    names get ``_2``, ``_3``... in decreasing MI, the matched facet keeping the bare name.
    """
    m = _np(mi, "mi").astype(np.float64)
    cols = list(categories)
    if m.ndim != 2 or m.shape[1] != len(cols):
        raise InputError(f"mi must be (K facets, C categories) with C = {len(cols)} "
                         f"(one column per category name); got shape {m.shape}.")
    K = m.shape[0]
    chosen: list[int | None] = [None] * K
    matched = [False] * K
    if cols and K:
        try:
            from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]
        except ImportError:
            raise InputError("naming facets needs scipy (Hungarian matching); install it with "
                             "pip install scipy (a dependency of safety-polytope).") from None
        rows, cs = linear_sum_assignment(-m)
        for k, c in zip(rows.tolist(), cs.tolist()):
            chosen[k], matched[k] = c, True
        for k in range(K):
            if chosen[k] is None:
                chosen[k] = int(np.argmax(m[k]))
    cats: list[str] = []
    for k, c in enumerate(chosen):
        if c is None or m[k, c] <= min_mi:
            cats.append(MIXED)
            matched[k] = False
        else:
            cats.append(cols[c])
    score = [m[k, c] if c is not None else 0.0 for k, c in enumerate(chosen)]
    return FacetMatch(cats, matched, _unique_names(cats, matched, score))


def _unique_names(cats: list[str], matched: list[bool], score: list[float]) -> list[str]:
    names = [""] * len(cats)
    taken: set[str] = set()
    # The matched facet keeps the bare name; the rest follow in decreasing MI.
    for k in sorted(range(len(cats)), key=lambda k: (not matched[k], -score[k], k)):
        name, i = cats[k], 2
        while name in taken:
            name, i = f"{cats[k]}_{i}", i + 1
        names[k] = name
        taken.add(name)
    return names


# --------------------------------------------------------------------------- the table


@dataclass
class FacetRow:
    """One facet's interpretation. ``purity``/``chance`` are None when undefined (a ``mixed``
    facet, or no unsafe example assigned); ``top_examples`` are ``(text, v_k)`` pairs."""

    index: int
    name: str
    category: str
    matched: bool
    mi: float  # bits, positive MI with ``category`` (0 for mixed)
    purity: float | None
    chance: float | None
    share: float
    n_assigned: int  # unsafe examples whose argmax facet this is
    n_violated: int  # unsafe examples violating this facet
    mi_by_category: dict[str, float] = field(default_factory=dict)  # positive MI, bits
    top_examples: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top_examples"] = [[t, v] for t, v in self.top_examples]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FacetRow:
        known = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        known["top_examples"] = [(str(t), float(v)) for t, v in d.get("top_examples", [])]
        return cls(**known)


def facet_table_from_violations(
    v: ArrayLike,
    y: ArrayLike,
    categories: Sequence[Any],
    texts: Sequence[str] | None = None,
    thresholds: ArrayLike | None = None,
    *,
    names: Sequence[str] | None = None,
    top_k: int = 5,
    min_mi: float | None = None,
    max_chars: int = 200,
) -> list[FacetRow]:
    """``facet_table`` on violations ``v`` ``(n, K)`` already computed (``t`` default 0).

    ``min_mi`` (bits) below which a facet is ``mixed``; default ``noise_floor(n)``.
    """
    va = _np(v, "v").astype(np.float64)
    if va.ndim != 2:
        raise InputError(f"v must be 2-D (n examples, K facets); got shape {va.shape}.")
    n, K = va.shape
    t = np.zeros(K) if thresholds is None else _np(thresholds, "thresholds").astype(np.float64)
    if t.shape != (K,):
        raise InputError(f"thresholds must have one value per facet ({K}); got shape {t.shape}.")
    unsafe = _as_unsafe(y, n)
    cats = _as_cats(categories, n)
    if texts is not None and len(texts) != n:
        raise InputError(f"texts has {len(texts)} entries but there are {n} examples.")
    if not unsafe.any():
        raise InputError("facet interpretation needs unsafe examples (label 1); y has none.")
    cols = list(names) if names is not None else category_columns(list(cats), unsafe)
    margin = va - t
    violated = margin > 0
    mi = facet_category_mi(violated, unsafe.astype(int), list(cats), cols, positive_only=True)
    match = match_facets(mi, cols, noise_floor(n) if min_mi is None else min_mi)

    n_unsafe = int(unsafe.sum())
    assign = np.argmax(margin, axis=1)
    tops = _top_from_v(va, t, texts, unsafe, top_k, max_chars)
    rows = []
    for k in range(K):
        mine = unsafe & (assign == k)
        cat = match.categories[k]
        purity = chance = None
        if cat != MIXED:
            chance = float((unsafe & (cats == cat)).sum() / n_unsafe)
            if mine.any():
                purity = float((cats[mine] == cat).sum() / mine.sum())
        rows.append(FacetRow(
            index=k, name=match.names[k], category=cat, matched=match.matched[k],
            mi=float(mi[k, cols.index(cat)]) if cat != MIXED else 0.0,
            purity=purity, chance=chance, share=float(mine.sum() / n_unsafe),
            n_assigned=int(mine.sum()), n_violated=int((unsafe & violated[:, k]).sum()),
            mi_by_category={c: float(mi[k, j]) for j, c in enumerate(cols)},
            top_examples=tops[k]))
    logger.info("facets named: %s", ", ".join(r.name for r in rows))
    return rows


def facet_table(polytope: SafetyPolytope, X: ArrayLike, y: ArrayLike,
                categories: Sequence[Any], texts: Sequence[str] | None = None, *,
                top_k: int = 5, min_mi: float | None = None) -> list[FacetRow]:
    """One ``FacetRow`` per facet (in facet order) from training data ``X`` ``(n, d)``,
    labels ``y`` ``(n,)`` (1 = unsafe), per-example ``categories`` and optional ``texts``.

    Use the data the polytope was fitted on (or a held-out split of it): purity and chance are
    shares of *its* unsafe examples.
    """
    v = polytope.violations(X)
    return facet_table_from_violations(v, y, categories, texts, polytope.facet_thresholds_,
                                       top_k=top_k, min_mi=min_mi)


def facet_order(rows: Sequence[FacetRow], categories: Sequence[str]) -> list[int]:
    """Facet indices ordered by category (taxonomy/column order, ``mixed`` last), then MI:
    a heatmap in this order shows the matching as a diagonal."""
    pos = {c: i for i, c in enumerate(categories)}
    return [r.index for r in sorted(rows, key=lambda r: (pos.get(r.category, len(pos)),
                                                        -r.mi, r.index))]


def apply_facet_names(polytope: SafetyPolytope, rows: Sequence[FacetRow]) -> SafetyPolytope:
    """Name the facets after ``rows`` (``set_facet_names``) and store the table, the positive-MI
    matrix and the definitions in ``polytope.metrics_["facets"]`` (JSON). Returns the polytope."""
    rows = sorted(rows, key=lambda r: r.index)
    K = polytope.facets_.shape[0]
    if [r.index for r in rows] != list(range(K)):
        raise InputError(f"rows must describe each of the {K} facets once; got facet indices "
                         f"{[r.index for r in rows]}.")
    polytope.set_facet_names([r.name for r in rows])
    cols = list(rows[0].mi_by_category) if rows else []
    polytope.metrics_["facets"] = {
        "version": TABLE_VERSION, "units": UNITS, "definitions": dict(DEFINITIONS),
        "categories": cols, "mi": [[r.mi_by_category.get(c, 0.0) for c in cols] for r in rows],
        "order": facet_order(rows, cols), "rows": [r.to_dict() for r in rows],
    }
    return polytope


def stored_facets(polytope: SafetyPolytope) -> tuple[list[FacetRow], dict[str, Any]]:
    """The rows and raw dict stored by ``apply_facet_names``; ``InputError`` when absent."""
    stored = (getattr(polytope, "metrics_", None) or {}).get("facets")
    if not isinstance(stored, dict) or "rows" not in stored:
        raise InputError("this polytope has no facet table in metrics_['facets']; compute one "
                         "with evaluation.facets.facet_table(...) and apply_facet_names(...) "
                         "after fitting, then save it again.")
    version = stored.get("version")
    if version != TABLE_VERSION:
        raise InputError(f"the stored facet table has version {version!r}; this version reads "
                         f"{TABLE_VERSION}. Recompute it with facet_table(...).")
    return [FacetRow.from_dict(r) for r in stored["rows"]], stored


# --------------------------------------------------------------------------- geometry, examples


def facet_cosine(polytope: SafetyPolytope,
                 space: Literal["features", "hidden"] = "features") -> np.ndarray:
    """Cosine similarity of facet normals, ``(K, K)``.

    ``features``: rows of ``facets_`` (Phi), in the encoded (for identity: standardised) space.
    ``hidden``: identity encoder only, the normals on raw hidden states (standardisation folded
    in, ``Phi / scale``), the directions steering moves along. A zero normal gives 0.
    """
    polytope._check_fitted()
    if space == "features":
        phi = polytope.facets_
    elif space == "hidden":
        if polytope.params_["encoder"] != "identity":
            raise InputError(f"facet_cosine(space='hidden') needs the identity encoder; this "
                             f"polytope uses {polytope.params_['encoder']!r}, whose facets are "
                             f"not directions in hidden space. Use space='features'.")
        phi = polytope.folded().facets
    else:
        raise InputError(f"space must be 'features' or 'hidden'; got {space!r}.")
    u = torch.nn.functional.normalize(phi.detach().double().cpu(), dim=1)
    return (u @ u.T).numpy()


def _top_from_v(v: np.ndarray, t: np.ndarray, texts: Sequence[str] | None, rows: np.ndarray,
                k: int, max_chars: int) -> list[list[tuple[str, float]]]:
    if texts is None or k <= 0:
        return [[] for _ in range(v.shape[1])]
    out = []
    idx = np.flatnonzero(rows)
    for j in range(v.shape[1]):
        cand = idx[v[idx, j] > t[j]]
        best = cand[np.argsort(-v[cand, j], kind="stable")[:k]]
        out.append([(_clip(texts[i], max_chars), float(v[i, j])) for i in best])
    return out


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars - 1] + "…"


def top_examples(polytope: SafetyPolytope, X: ArrayLike, texts: Sequence[str], k: int = 5,
                 y: ArrayLike | None = None, max_chars: int = 200
                 ) -> list[list[tuple[str, float]]]:
    """Per facet, up to ``k`` ``(text, v_k)`` with the largest violation among the rows that
    violate it; with ``y``, among unsafe rows only (the usual use). Texts are clipped."""
    v = _np(polytope.violations(X), "v").astype(np.float64)
    if len(texts) != v.shape[0]:
        raise InputError(f"texts has {len(texts)} entries but X has {v.shape[0]} rows.")
    rows = np.ones(v.shape[0], bool) if y is None else _as_unsafe(y, v.shape[0])
    t = _np(polytope.facet_thresholds_, "thresholds").astype(np.float64)
    return _top_from_v(v, t, texts, rows, k, max_chars)


# --------------------------------------------------------------------------- plot


def plot_heatmap(mi: ArrayLike, facet_names: Sequence[str], categories: Sequence[str],
                 path: str | PathLike[str], *, title: str | None = None) -> Path:
    """Write a PNG heatmap of ``mi`` ``(K, C)`` (rows = facets, in the order given).

    Uses matplotlib's Agg canvas directly, so no global backend is changed. Raises
    ``InputError`` when matplotlib is missing (``pip install 'safety-polytope[plot]'``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("plotting needs matplotlib; install it with "
                         "pip install 'safety-polytope[plot]'.") from None
    m = _np(mi, "mi").astype(np.float64)
    K, C = len(facet_names), len(categories)
    if m.shape != (K, C):
        raise InputError(f"mi has shape {m.shape}, but there are {K} facet names and {C} "
                         f"categories; expected ({K}, {C}).")
    fig = Figure(figsize=(max(4.0, 0.6 * C + 2.5), max(3.0, 0.4 * K + 1.8)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0.0)
    ax.set_xticks(range(C), labels=list(categories), rotation=45, ha="right")
    ax.set_yticks(range(K), labels=list(facet_names))
    ax.set_xlabel("category (unsafe examples)")
    ax.set_ylabel("facet")
    ax.set_title(title or "Facet-category mutual information (bits)")
    if K * C <= 400:
        top = float(m.max()) if m.size else 0.0
        for i in range(K):
            for j in range(C):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if m[i, j] > 0.6 * top else "white")
    fig.colorbar(im, ax=ax, label="MI (bits)")
    fig.tight_layout()
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    logger.info("wrote facet heatmap to %s", out)
    return out


def plot_stored_heatmap(polytope: SafetyPolytope, path: str | PathLike[str]) -> Path:
    """``plot_heatmap`` of the table stored by ``apply_facet_names``, facets in category order."""
    rows, stored = stored_facets(polytope)
    by_index = {r.index: r for r in rows}
    order = stored.get("order") or [r.index for r in rows]
    mi = np.asarray(stored["mi"], dtype=np.float64).reshape(len(rows), -1)[order]
    return plot_heatmap(mi, [by_index[k].name for k in order], stored["categories"], path)


__all__ = [
    "DEFINITIONS", "MIXED", "UNITS", "FacetMatch", "FacetRow", "apply_facet_names",
    "category_columns", "facet_category_mi", "facet_cosine", "facet_order", "facet_table",
    "facet_table_from_violations", "match_facets", "noise_floor", "plot_heatmap",
    "plot_stored_heatmap", "stored_facets", "top_examples",
]
