"""Atomic file writes: a file sdl writes appears whole or not at all (temporary name, fsync, rename)."""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_prefix(path: Path) -> str:
    """`.<name>.tmp-<pid>@<host>-`: the writer's identity, so a leftover of a killed writer can be told from a live one."""
    return f".{path.name}.tmp-{os.getpid()}@{socket.gethostname()}-"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any], *, keep_attributes: bool = False) -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never a mix; the temporary
    file (named `.<name>.tmp-<pid>@<host>-*`) is removed when `write` raises, and by
    `remove_stale_temporaries` once its writer is dead. `keep_attributes`: an existing `path` keeps
    its mode (and its owner, where this process may set it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.stat() if keep_attributes and path.exists() else None
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), dir=path.parent)
    try:
        # mkstemp makes 0600; a dataset must be as readable as any file the user writes
        os.chmod(tmp_name, (old.st_mode & 0o7777) if old else 0o666 & ~_umask())
        if old and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp_name, old.st_uid, old.st_gid)
            except PermissionError:
                pass  # only root may give a file away; the mode is still kept
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


_TEMPORARY = re.compile(r"\.tmp-(\d+)@(.*)-[^-]*$")


def _writer_alive(name: str, unnamed_alive: bool) -> bool:
    """Whether the writer named in a temporary file's name may still be writing it (unknown host: assume so)."""
    match = _TEMPORARY.search(name)
    if match is None:
        return unnamed_alive  # no writer in the name (an older sdl's, or not sdl's): cannot be told apart
    pid, host = int(match.group(1)), match.group(2)
    if host != socket.gethostname():
        return True  # another machine's process (a shared filesystem): its liveness cannot be checked from here
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def remove_stale_temporaries(directory: str | os.PathLike, name: str | None = None) -> int:
    """Delete the `.*.tmp-*` leftovers of writes whose writer was killed (never a live writer's); returns how many.

    `name`: only the leftovers of writes to that file, and only those whose name says their writer (a folder
    shared with other programs); without it, every leftover in `directory` (a folder only sdl writes, under its lock).
    """
    removed = 0
    for leftover in Path(directory).glob(f".{glob.escape(name)}.tmp-*" if name else ".*.tmp-*"):
        if not _writer_alive(leftover.name, unnamed_alive=name is not None):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
