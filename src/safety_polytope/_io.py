"""Atomic file and directory writes: write under a temporary name next to the target, then rename.

A crash at any point leaves either the old entry or nothing, never a half-written entry that a
later run would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sap_home() -> Path:
    """The cache and state directory: ``$SAP_HOME``, else ``~/.cache/safety-polytope``."""
    env = os.environ.get("SAP_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "safety-polytope"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on clean exit it is renamed onto ``target``.

    On error the temporary is removed and ``target`` is untouched. For directories an existing
    target is replaced (removed just before the rename).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    work = tmp if is_dir else tmp / target.name
    try:
        yield work
        # mkdtemp makes 0700 and some writers make 0600; give the entry the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        for path in [tmp, *tmp.rglob("*")] if is_dir else [work]:
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        if is_dir:
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        else:
            os.replace(work, target)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
