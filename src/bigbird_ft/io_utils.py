"""Atomic file writes: a crashed or killed run never leaves a half-written output behind.

``tempfile`` creates its files 0600 and folders 0700 (private by design); an output renamed into
place keeps that mode, so another user, a serving process or a shared results folder could not read
it. Each temporary is given the mode a plain ``open``/``mkdir`` would have had under the umask.
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


def current_umask() -> int:
    """The process umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        os.chmod(tmp_path, 0o666 & ~current_umask())
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
    if Path.cwd().resolve().is_relative_to(target.resolve()):
        raise ValueError(f"refusing to replace {target}: it holds the current folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
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
