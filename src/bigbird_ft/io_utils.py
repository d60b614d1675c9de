"""Atomic file writes: a crashed or killed run never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; it replaces ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; it replaces ``target`` only on success.

    A folder that existed before is replaced (re-exports). A folder that another process created
    meanwhile (DDP ranks or parallel jobs filling the same content-keyed cache) is kept, since its
    readers may be using it, and this copy is discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if existed and target.exists():
            shutil.rmtree(target)
        try:
            # POSIX rename of a folder: atomic; fails (ENOTEMPTY) onto a non-empty folder
            os.replace(tmp, target)
        except OSError:
            if existed or not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json_atomic(target: str | os.PathLike, payload: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
