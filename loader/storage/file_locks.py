"""Lock files held with flock, which a fork does not carry into the child.

An flock belongs to the open file, and a forked child shares the parent's open files: a DataLoader worker forked
while a thread of the training process (the prefetcher) held a cache entry's lock kept that lock alive after the
parent released it — and then waited on it forever when it needed the same entry (a hang, found by a test). Every
lock file open here is recorded; in a forked child they are closed at once (`os.register_at_fork`), so a lock is
the parent's alone. Opening and recording happen under a guard that a fork waits for, so none slips between.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_open_locks: set[int] = set()  # the file descriptors of the lock files open in this process
_guard = threading.Lock()


def _before_fork() -> None:
    _guard.acquire()


def _after_fork_in_parent() -> None:
    _guard.release()


def _after_fork_in_child() -> None:
    global _guard
    for fd in _open_locks:  # the parent's locks: this process never held them
        try:
            os.close(fd)
        except OSError:
            pass
    _open_locks.clear()
    _guard = threading.Lock()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


@contextmanager
def flocked(path: Path, mode: int, on_open_error: Callable[[OSError], Exception]) -> Iterator[bool]:
    """Hold an flock of `mode` on the file `path` (created when missing) for the block: True, or False when `mode`
    has LOCK_NB and another holds it. An OSError opening the file is raised as `on_open_error(error)`."""
    with _guard:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise on_open_error(exc) from None
        _open_locks.add(fd)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        with _guard:
            ours = fd in _open_locks  # not after a fork: the child closed the parent's copy already
            _open_locks.discard(fd)
        if ours:
            os.close(fd)  # closing releases the lock
