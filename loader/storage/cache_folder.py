"""The cache folder as its bound and its evictions see it: the bytes under it, an object's size and last use, whether the
writer of a part file still lives. Another process may remove any file at any moment: a file gone counts as empty."""

from __future__ import annotations

import os
from pathlib import Path


def tree_bytes(root: Path) -> int:
    """The sizes of every regular file under `root` added up (what the bound covers)."""
    total, stack = 0, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass  # removed by another process while we looked
    return total


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        pass  # evicted since it was opened


def file_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
