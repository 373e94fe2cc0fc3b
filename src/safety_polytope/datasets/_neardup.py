"""Near-duplicate detection without comparing every pair.

Two texts are near-duplicates when, after ``normalize_text``,

* the Jaccard similarity of their word *sets* is at least ``jaccard`` (default 0.6), or
* they share a word n-gram (default 8 words) that is not boilerplate.

Jaccard pairs are found with prefix filtering (Bayardo et al., "All-Pairs"): words are ordered
rarest first; two sets with J >= t must share a word within the first ``|x| - ceil(t|x|) + 1``
words of each, so only sets sharing such a *prefix* word are compared, and only if their sizes
are compatible (``|y| >= t|x|``); see ``jaccard_pairs`` for the further filters. Shared n-grams
come from an index of hashed n-grams (a rolling hash over per-word BLAKE2b codes, so results do
not depend on Python's hash randomisation).

Boilerplate: an n-gram found in more than ``max_df`` texts is ignored. Such n-grams are
scaffolding shared by whole families ("give detailed step by step instructions for how to",
the DAN preamble of a hundred in-the-wild prompts), not evidence that two texts are variants of
each other; counting them would chain unrelated requests into one giant group. Variants that
share only boilerplate must reach the Jaccard threshold to be linked.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence

_NON_WORD = re.compile(r"[\W_]+")

JACCARD = 0.6
NGRAM = 8
MAX_DF = 20


def normalize_text(text: str) -> str:
    """Unicode NFKC, lowercase, punctuation and symbols to spaces, whitespace collapsed.

    >>> normalize_text("  How   do I kill a *stuck* process?! ")
    'how do i kill a stuck process'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving, union by size)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return list(out.values())


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9)


def _ordered_sets(texts: Sequence[str]) -> list[list[int]]:
    """Word sets as sorted lists of word ranks: rarest word first (ties by the word itself, so
    the order is deterministic)."""
    sets = [set(t.split()) for t in texts]
    df: dict[str, int] = defaultdict(int)
    for s in sets:
        for w in s:
            df[w] += 1
    rank = {w: r for r, w in enumerate(sorted(df, key=lambda w: (df[w], w)))}
    return [sorted(rank[w] for w in s) for s in sets]


_BITS = 4096


def _bitmap(ranks: list[int]) -> int:
    bm = 0
    for r in ranks:
        bm |= 1 << ((r * 2654435761) % _BITS)
    return bm


def jaccard_pairs(texts: Sequence[str], t: float = JACCARD,
                  query: Iterable[int] | None = None) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of normalised texts with word-set Jaccard >= t.

    All-Pairs with PPJoin's positional filter: sets are visited by increasing size; each is
    probed with its prefix of ``|x| - ceil(t|x|) + 1`` rarest words against an index holding
    the first ``|y| - ceil(2t/(1+t)|y|) + 1`` words of the smaller sets seen so far. A
    candidate is dropped as soon as the words it can still share cannot reach the required
    overlap ``ceil(t/(1+t)(|x|+|y|))``; survivors pass a bitmap bound
    (``|x&y| <= (|x|+|y|-popcount(bx^by))/2``) before the exact count.

    With ``query`` (indices), only pairs with exactly one member in ``query`` are returned.
    """
    ordered = _ordered_sets(texts)
    qset = set(query) if query is not None else None
    index: dict[int, list[tuple[int, int]]] = defaultdict(list)
    sets: dict[int, frozenset[int]] = {}
    bitmaps: dict[int, int] = {}
    pairs: set[tuple[int, int]] = set()
    factor = t / (1 + t)
    for x in sorted(range(len(texts)), key=lambda i: (len(ordered[i]), i)):
        xs = ordered[x]
        nx = len(xs)
        if not nx:
            continue
        overlap: dict[int, int] = {}
        for i, w in enumerate(xs[: nx - _ceil(t * nx) + 1]):
            for y, j in index.get(w, ()):
                a = overlap.get(y, 0)
                if a < 0:
                    continue  # pruned
                ny = len(ordered[y])
                if ny < t * nx - 1e-9:
                    overlap[y] = -1
                    continue
                need = _ceil(factor * (nx + ny))
                if a + 1 + min(nx - i - 1, ny - j - 1) < need:
                    overlap[y] = -1
                else:
                    overlap[y] = a + 1
        for y, a in overlap.items():
            if a <= 0 or (qset is not None and ((x in qset) == (y in qset))):
                continue
            ny = len(ordered[y])
            need = _ceil(factor * (nx + ny))
            for k in (x, y):
                if k not in sets:
                    sets[k] = frozenset(ordered[k])
                    bitmaps[k] = _bitmap(ordered[k])
            if (nx + ny - (bitmaps[x] ^ bitmaps[y]).bit_count()) // 2 < need:
                continue
            if len(sets[x] & sets[y]) >= need:
                pairs.add((min(x, y), max(x, y)))
        for j, w in enumerate(xs[: nx - _ceil(2 * factor * nx) + 1]):
            index[w].append((x, j))
    return pairs


_P = (1 << 61) - 1  # Mersenne prime modulus of the rolling hash
_B = 1_000_003


def _word_codes(texts: Sequence[str]) -> dict[str, int]:
    """A 61-bit code per distinct word from BLAKE2b (hashlib: the same in every process)."""
    codes: dict[str, int] = {}
    for t in texts:
        for w in t.split():
            if w not in codes:
                codes[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(),
                                          "big") % _P
    return codes


def ngram_links(texts: Sequence[str], n: int = NGRAM, max_df: int = MAX_DF
                ) -> tuple[list[list[int]], int]:
    """Texts sharing each non-boilerplate n-gram: lists of >= 2 indices; and how many n-grams
    were ignored as boilerplate (found in more than ``max_df`` texts).

    n-grams are keyed by a polynomial rolling hash (mod 2**61 - 1) of per-word BLAKE2b codes:
    one multiply-add per word instead of one digest per n-gram; with a few million n-grams the
    chance of any accidental collision is about 1e-6.
    """
    codes = _word_codes(texts)
    top = pow(_B, n - 1, _P)
    index: dict[int, int | list[int]] = {}
    for doc, t in enumerate(texts):
        words = t.split()
        if len(words) < n:
            continue
        h = 0
        for k, w in enumerate(words):
            if k >= n:
                h = (h - codes[words[k - n]] * top) % _P
            h = (h * _B + codes[w]) % _P
            if k < n - 1:
                continue
            seen = index.get(h)
            if seen is None:
                index[h] = doc
            elif isinstance(seen, int):
                if seen != doc:
                    index[h] = [seen, doc]
            elif seen[-1] != doc:
                seen.append(doc)
    groups: list[list[int]] = []
    ignored = 0
    distinct: set[tuple[int, ...]] = set()
    for docs in index.values():
        if isinstance(docs, int):
            continue
        if len(docs) > max_df:
            ignored += 1
        elif (key := tuple(docs)) not in distinct:
            distinct.add(key)
            groups.append(docs)
    return groups, ignored


def near_duplicate_components(texts: Sequence[str], jaccard: float = JACCARD, n: int = NGRAM,
                              max_df: int = MAX_DF) -> tuple[UnionFind, int]:
    """Union-find of near-duplicate texts (normalised), and the boilerplate n-gram count."""
    uf = UnionFind(len(texts))
    for i, j in jaccard_pairs(texts, jaccard):
        uf.union(i, j)
    groups, ignored = ngram_links(texts, n, max_df)
    for docs in groups:
        for d in docs[1:]:
            uf.union(docs[0], d)
    return uf, ignored


def cross_pairs(texts: Sequence[str], query: Sequence[int], jaccard: float = JACCARD,
                n: int = NGRAM, max_df: int = MAX_DF) -> set[tuple[int, int]]:
    """Direct near-duplicate pairs between ``query`` indices and all other indices."""
    qset = set(query)
    pairs = jaccard_pairs(texts, jaccard, query=qset)
    groups, _ = ngram_links(texts, n, max_df)
    for docs in groups:
        inside = [d for d in docs if d in qset]
        outside = [d for d in docs if d not in qset]
        pairs.update((min(a, b), max(a, b)) for a in inside for b in outside)
    return pairs
