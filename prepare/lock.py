"""The output folder's lock `<out>/.sdl/lock`: one `sdl prepare` writes a folder at a time.

The lock is an exclusive `flock` on `.sdl/lock`, taken before anything is read or written and held
for the whole run; the file names its holder (`{"pid": 4242, "host": "node7", "since": "…"}`) so a
refused writer can say who holds it. The kernel drops an flock when its holder dies, however it dies
(`kill -9`, the OOM killer), so the lock of a dead run is taken over at once, with no guess about
whether a PID still lives; on NFS, Linux maps flock to POSIX locks kept by the server, across hosts.
The holder removes the file when it finishes; a writer that locked a file just removed (its inode is
no longer the path's) tries the path again, so two writers never both hold it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sdl.loader.errors import InputError, SdlError
from sdl.loader.format.tokens import CACHE_DIR

LOCK_NAME = "lock"


class OutputLockedError(SdlError):
    """Another process is writing the same output folder."""


def lock_path(out: Path) -> Path:
    return Path(out) / CACHE_DIR / LOCK_NAME


@contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of output folder `out` (created if missing) for the duration of the block."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; OUT must be a folder (new or written by sdl prepare)")
    made = not (out / CACHE_DIR).exists()
    try:
        (out / CACHE_DIR).mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock_path(out))
    except OSError as exc:
        raise InputError(f"{out}: cannot write the output folder ({exc.strerror or exc}); choose a writable folder") from None
    try:
        yield
    finally:
        lock_path(out).unlink(missing_ok=True)  # still locked: a waiting writer sees the inode change and retries
        os.close(fd)
        if made:  # a run refused before it wrote anything leaves no empty cache folder in the user's folder
            try:
                (out / CACHE_DIR).rmdir()
            except OSError:
                pass  # not empty: the run's journal is there


def _acquire(path: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a refused writer removed the cache folder it had made: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(f"{path.parent.parent} is being written by another sdl prepare ({holder(path)}); "
                                    "wait for it to finish or stop it, then re-run (a killed writer's lock is released at once)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            return fd
        os.close(fd)  # we locked a file its holder removed on release: take the path afresh


def holder(path: Path) -> str:
    """Who holds the lock at `path`, in words (from the record the holder wrote)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        return f"pid {record['pid']} on host {record['host']}, since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"
