"""Data sets: named sources, one harm taxonomy, user data files and leak-free splits.

Labels everywhere: **1 = unsafe, 0 = safe**.

>>> from safety_polytope.datasets import load_sources, make_splits, DEFAULT_TRAIN_SOURCES
>>> splits = make_splits(load_sources(DEFAULT_TRAIN_SOURCES), seed=0)  # doctest: +SKIP
"""

from ._templates import fill_template
from .records import SAFE, UNSAFE, FrozenMeta, Record
from .sources import (
    DEFAULT_TRAIN_SOURCES,
    EVAL_SOURCES,
    SOURCES,
    Source,
    clear_cache,
    get_source,
    load_source,
    load_sources,
)
from .splits import SplitReport, Splits, contamination, make_splits, normalize_text, uid
from .summary import summarize, summary_table
from .taxonomy import ALL_CATEGORIES, BENIGN, CATEGORIES, OTHER, categorize
from .userdata import USER_COLUMNS, load_file

__all__ = [
    "ALL_CATEGORIES", "BENIGN", "CATEGORIES", "DEFAULT_TRAIN_SOURCES", "EVAL_SOURCES", "OTHER",
    "SAFE", "SOURCES", "UNSAFE", "USER_COLUMNS", "FrozenMeta", "Record", "Source", "SplitReport",
    "Splits", "categorize", "clear_cache", "contamination", "fill_template", "get_source",
    "load_file", "load_source", "load_sources", "make_splits", "normalize_text", "summarize",
    "summary_table", "uid",
]
