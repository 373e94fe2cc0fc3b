"""Rich progress bars for anything that takes more than a few seconds (stderr, never stdout)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int, disable: bool = False
                 ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)``; shows a bar with rate and time left unless ``disable``."""
    if disable:
        yield lambda _k=1: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=_console,
                  transient=False) as prog:
        task = prog.add_task(description, total=total)
        yield lambda k=1: prog.advance(task, k)
