"""Opened sources, per process: an LRU of memory maps, zarr arrays or Arrow tables, and a batch's grouping by source.

A file changed under a running loader must not be read as if it were the one indexed: a memory map of a
file rewritten in place serves the new bytes, and one truncated kills the reader with SIGBUS at the first read
past its new end. So when the LRU opens a source, and every `REFRESH_S` for the open ones, it compares the
file's size and mtime with what the index recorded (and its inode with what the index found when the dataset
was opened), and raises a FormatError naming the first that changed (a stat per open source, once a second:
~1 µs each; see `check_files`). A read that reaches the cut before the check still dies; the loader then
names the file from the training process (`sdl.loader.runtime.workers`). Until the check, reads past the new end
inside the memory page that holds it return zeros. Checking every batch's sources instead (an fstat through each
map, measured 0.9 µs: up to ~15 µs a 16-window batch of a global shuffle, against ~45 µs for the batch) would
narrow that, not close it (a cut between check and read), nor spare the SIGBUS: not done. The zeros are not
confined to a shard's last page: they come from the page of the new end, wherever the cut falls.

How many sources stay open (`max_open`): a memory map costs a file descriptor and a little
kernel bookkeeping, not memory, so the default is generous and `raise_open_files_limit` lifts the
process's soft descriptor limit towards what all its LRUs may hold (never above the hard limit). When the
process runs out of descriptors all the same, every LRU of the process closes its older half (and asks its owner
to drop what it holds beside it, e.g. a span view's maps) and keeps at most what is left from then on (with a
warning), and the open is tried once more; if that fails too, the error names the limit and what to do.
"""

from __future__ import annotations

import errno
import functools
import os
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from sdl.loader.errors import FormatError, InputError

REFRESH_S = 1.0
SPARE_FILES = 256  # descriptors kept free for everything else when the LRU is full
REFRESH_CALLS = 8  # a clock read costs ~85 ns (~10 ns a call): 10 batches a second are checked each second


class OutOfDescriptors(InputError):
    """Out of file descriptors even after every LRU of the process closed its older half (a holder of many opened
    sources, e.g. a span view being made, may catch it, drop what it holds and go on without)."""


class OpenSources:
    """An LRU of opened sources (memory maps, zarr arrays, Arrow tables), at most `max_open`, per process.

    Datasets keep one and drop it when pickled (`__getstate__`), so each DataLoader worker opens its own.
    `closed` counts the sources every LRU of the process has closed: one integer to look at, per batch, for a holder
    of opened sources from several LRUs (a mixture's plan) that nothing was closed since it last looked.
    """

    closed = 0
    every: weakref.WeakSet = weakref.WeakSet()  # the process's LRUs: the soft limit is lifted towards what they may hold

    def __init__(self, max_open: int, open_source: Callable[[int], Any], index: Any = None,
                 release: Callable[[], None] | None = None) -> None:
        if max_open < 1:
            raise InputError(f"max_open is {max_open}, expected at least 1")
        self.max_open, self.open_source, self.items, self.release = max_open, open_source, OrderedDict(), release
        self.index, self.checked, self.countdown = index, time.monotonic(), REFRESH_CALLS
        self.evictions = 0  # sources closed so far: whoever holds opened sources beyond a call checks it (SpanView)
        OpenSources.every.add(self)
        raise_open_files_limit(sum(lru.max_open for lru in list(OpenSources.every)) + SPARE_FILES)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, source_id: int) -> Any:
        item = self.items.get(source_id)
        self.countdown -= 1
        if self.countdown <= 0 and self.index is not None:
            self.refresh()
        if item is None:
            if self.index is not None:
                check_files(self.index, (source_id,))
            item = self.items[source_id] = self._open(source_id)
            if len(self.items) > self.max_open:
                self._close(1)
        else:
            self.items.move_to_end(source_id)
        return item

    def _open(self, source_id: int) -> Any:
        """`open_source`; out of file descriptors, the older half of every LRU of the process closed and one more try."""
        return with_descriptors(lambda: self.open_source(source_id), f"opening source {source_id}", f"{len(self.items)} open here",
                                "lower max_open_shards (max_open), or raise the limit (ulimit -n)")

    def _shrink(self) -> None:
        """Out of descriptors: the older half closed, the owner's other holds released, at most the rest kept open."""
        held = len(self.items)
        self._close(max(1, held // 2))
        if self.release is not None:
            self.release()
        self.max_open = max(1, len(self.items) + 1)
        warnings.warn(f"out of file descriptors with {held} sources open here (this process may open "
                      f"{raise_open_files_limit(0)}): keeping at most {self.max_open} open from now on, which reopens "
                      "files more often; raise the limit (ulimit -n) to keep them all", RuntimeWarning, stacklevel=3)

    def _close(self, count: int) -> None:
        """Drop the `count` least recently used sources (each closes when nothing else holds it)."""
        for _ in range(min(count, len(self.items))):
            self.items.popitem(last=False)
            self.evictions += 1
            OpenSources.closed += 1

    def holds_all(self, held: dict[int, Any]) -> bool:
        """Whether each `{source_id: item}` of `held` is still the item this LRU holds for it (none closed, none
        reopened): what keeps an opened source taken from here before covered by the file checks."""
        items = self.items
        return all(items.get(source_id) is item for source_id, item in held.items())

    def refresh(self) -> None:
        """Every REFRESH_S (looked at every REFRESH_CALLS calls): check the open sources' files."""
        self.countdown = REFRESH_CALLS
        if time.monotonic() - self.checked >= REFRESH_S:
            check_files(self.index, self.items)
            self.checked = time.monotonic()


def with_descriptors(call: Callable[[], Any], what: str, detail: str, fix: str) -> Any:
    """`call()`; out of file descriptors, the older half of every LRU of the process closed and one more try, then
    OutOfDescriptors: "out of file descriptors <what> (<detail>; this process may open N): <fix>"."""
    for retry in (True, False):
        try:
            return call()
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            holders = [lru for lru in list(OpenSources.every) if lru.items]  # another LRU may hold them all
            if retry and holders:
                for lru in holders:
                    lru._shrink()
                continue
            raise OutOfDescriptors(f"out of file descriptors {what} ({detail}; this process may open "
                                   f"{raise_open_files_limit(0)}): {fix}") from None
    raise AssertionError("unreachable")


def group_by_source(source_ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """[(source_id, batch positions)] for a batch's source ids, each source once, in source order."""
    order = np.argsort(source_ids, kind="stable")
    sorted_ids = source_ids[order]
    cuts = np.flatnonzero(np.diff(sorted_ids)) + 1
    if not len(order):
        return []
    return list(zip(sorted_ids[np.r_[0, cuts]].tolist(), np.split(order, cuts)))


def check_files(index: Any, source_ids: Iterable[int]) -> None:
    """Raise a FormatError naming the first of `source_ids` whose file is not the one the index recorded: gone, of
    another size, modified since (its mtime; a file rewritten at the same size), or another file (its inode, where the
    index knows it: a file replaced by a rename, its mtime put back). `index` is a GlobalIndex, or anything with its
    `path_of`, `sources` (sizes, mtime_ns, inodes) and `kind`, and optionally `changed`: (since when, what to do)."""
    sizes, mtimes, inodes = index.sources.sizes, index.sources.mtime_ns, index.sources.inodes
    for source_id in source_ids:
        path = index.path_of(source_id)
        expected = int(sizes[source_id])
        try:
            stat = os.stat(path)
        except OSError:
            stat = None
        inode = 0 if inodes is None else int(inodes[source_id])
        if inode and not stable_inodes(os.path.dirname(path)):  # a FUSE mount may renumber a file it reopens
            inode = 0
        if stat is not None and stat.st_size == expected and stat.st_mtime_ns == mtimes[source_id] and inode in (0, stat.st_ino):
            continue
        if stat is None:
            found, how = f"is gone, the index recorded {expected:,} bytes", "deleted"
        elif stat.st_size != expected:
            found, how = f"is now {stat.st_size:,} bytes, the index recorded {expected:,} bytes", "truncated or rewritten"
        elif stat.st_mtime_ns != mtimes[source_id]:
            found, how = (f"was modified at {_when(stat.st_mtime_ns)}, the index recorded a file of the same size modified at "
                          f"{_when(int(mtimes[source_id]))}"), "rewritten"
        else:
            found, how = f"is now inode {stat.st_ino}, it was inode {inode} when the dataset was opened (same size and mtime)", "replaced"
        restore = {"tokens": "re-run sdl prepare with the same arguments", "arrow": "rewrite it as it was, e.g. with save_to_disk",
                   "zarr": "rewrite the array as it was"}.get(getattr(index, "kind", None), "rewrite it as it was")
        since, fix = getattr(index, "changed", ("under a running loader", f"restore it ({restore}) and resume from the last checkpoint"))
        raise FormatError(f"{path} {found}: the file changed {since} ({how}); {fix}")


@functools.lru_cache(maxsize=1024)
def stable_inodes(folder: str, mounts: str = "/proc/self/mounts") -> bool:
    """Whether a file's inode number under `folder` stays the same for as long as the file does: not on a FUSE mount
    (gcsfuse, s3fs, ...), which may number a file afresh each time it is looked up again; there `check_files` compares
    sizes and mtimes only. Read from the mount table (`mounts`); True where there is none."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return True
    real, best, kind = os.path.realpath(folder), "", ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, parts[2]
    return not kind.startswith("fuse")


def _when(mtime_ns: int) -> str:
    """An mtime as local time to the nanosecond (two writes a few ms apart differ in it)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns // 10**9)) + f".{mtime_ns % 10**9:09d}"


def descriptor_room() -> int:
    """Descriptors an LRU may take by default: the hard limit on open files less SPARE_FILES (large when unlimited)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1 << 20
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else max(1, hard - SPARE_FILES)


def raise_open_files_limit(wanted: int) -> int:
    """Lift the soft limit on open files towards `wanted` (never above the hard limit); the limit now in force."""
    try:
        import resource
    except ImportError:  # not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # e.g. macOS caps the soft limit below an unlimited hard one: keep the soft limit
            return soft
        return target
    return soft
