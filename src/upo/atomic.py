"""Folders (and files) written atomically: complete under their final name, or not there at all.

A folder is written under a temporary sibling name and renamed when complete, so a process killed
at any moment leaves the previous folder intact and never a half-written one under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_folder(final: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final` to write into; when the block completes, it
    replaces `final` (`commit_folder`). An exception removes it and leaves `final` as it was."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        commit_folder(tmp, final, durable=durable)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit_folder(tmp: Path, final: Path, *, durable: bool = False) -> None:
    """Rename the complete folder `tmp` to `final`, replacing any folder there. `durable` first
    flushes every file to disk (and the rename after it), so a power loss cannot undo a save."""
    if durable:
        _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if durable:
        _fsync_dir(final.parent, files=False)


def _fsync_dir(path: Path, files: bool = True) -> None:
    for file in path.rglob("*") if files else ():
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it and a rename: a reader (or a kill
    mid-write) sees the old file or the new one whole, never part of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
