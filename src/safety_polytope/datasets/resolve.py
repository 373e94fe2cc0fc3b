"""Turn a user's data argument (source names and/or file paths) into records."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .records import Record
from .sources import SOURCES, load_source
from .userdata import load_file


def load_data(items: Sequence[str], label: int | None = None, limit: int | None = None,
              seed: int = 0) -> list[Record]:
    """Records of every named source or file in ``items``, in order.

    ``limit`` keeps at most N records per item (a seeded sample, order preserved). Files are
    read with ``load_file`` and may hold a single class here: whether both classes are needed is
    decided by whoever fits on the data.
    """
    if not items:
        raise InputError(f"No data given; name sources ({', '.join(SOURCES)}) or files.")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1; got {limit}.")
    out: list[Record] = []
    for item in items:
        if item in SOURCES:
            recs = load_source(item)
        elif Path(item).suffix or Path(item).exists():
            recs = load_file(item, label=label, require_both_classes=False)
        else:
            raise InputError(f"{item!r} is neither a known source ({', '.join(SOURCES)}) nor a "
                             f"data file (.jsonl, .csv, .txt).")
        if limit is not None and len(recs) > limit:
            keep = sorted(random.Random(f"{seed}:{item}").sample(range(len(recs)), limit))
            recs = [recs[i] for i in keep]
        out.extend(recs)
    return out
