"""The one record type every data source yields.

A record is a value: frozen, hashable and compared by content, so sets of records, caches and
split reports behave predictably, and a round trip through ``to_dict`` compares equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

UNSAFE = 1
SAFE = 0


def _freeze(value: Any) -> Any:
    """Make ``value`` hashable: mappings become FrozenMeta, lists and sets become tuples."""
    if isinstance(value, Mapping):
        return value if isinstance(value, FrozenMeta) else FrozenMeta(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(_freeze(v) for v in value))
    return value


def _thaw(value: Any) -> Any:
    """The JSON-friendly inverse of ``_freeze``: FrozenMeta to dict, tuples to lists."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class FrozenMeta(Mapping[str, Any]):
    """An immutable, hashable mapping with content equality (keys are kept sorted)."""

    __slots__ = ("_items",)

    def __init__(self, data: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        merged = {**(data or {}), **kwargs}
        self._items: tuple[tuple[str, Any], ...] = tuple(
            sorted((str(k), _freeze(v)) for k, v in merged.items())
        )

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMeta):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMeta({dict(self._items)!r})"

    def to_dict(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self._items}


EMPTY_META = FrozenMeta()


@dataclass(frozen=True)
class Record:
    """One labelled example.

    Attributes:
        id: stable identifier, unique within its source (``"{source}-{n}"`` or the source's own).
        prompt: the user text (for templates: the template, with a ``{prompt}`` slot).
        label: **1 = unsafe, 0 = safe** (the unsafe class is the positive class everywhere).
        category: a harm taxonomy name (``taxonomy.CATEGORIES``) for unsafe records,
            ``"benign"`` for safe ones; a harmless twin keeps the area it resembles in
            ``meta["resembles"]``.
        source: the name of the source that produced it (a ``SOURCES`` key or a file's name).
        response: the assistant's answer for prompt+response pairs, else ``None``.
        meta: source-specific extras (raw scores, original categories...), frozen.
    """

    id: str
    prompt: str
    label: int
    category: str
    source: str
    response: str | None = None
    meta: Mapping[str, Any] = field(default=EMPTY_META)

    def __post_init__(self) -> None:
        if isinstance(self.label, bool) or self.label not in (SAFE, UNSAFE):
            raise InputError(
                f"Record {self.id!r} from {self.source!r} has label {self.label!r}; a label must "
                f"be 1 (unsafe) or 0 (safe)."
            )
        object.__setattr__(self, "label", int(self.label))
        if not isinstance(self.meta, FrozenMeta):
            object.__setattr__(self, "meta", FrozenMeta(self.meta))

    @property
    def is_unsafe(self) -> bool:
        return self.label == UNSAFE

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict (``Record(**d)`` rebuilds an equal record)."""
        meta = self.meta.to_dict() if isinstance(self.meta, FrozenMeta) else dict(self.meta)
        return {
            "id": self.id, "prompt": self.prompt, "label": self.label,
            "category": self.category, "source": self.source, "response": self.response,
            "meta": meta,
        }
