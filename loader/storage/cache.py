"""The node-local object cache: bounded in bytes, shared safely by every process on a node, evicting by next use.

Layout of a cache folder (shared by all ranks and workers of a node; any number of datasets):

    .lock                   flock: held while deciding what to admit and evict (short; never during a transfer)
    .locks/<hash>           one flock per object, exclusive while a process downloads or evicts it (or opens it
                            after a miss), so a node downloads an object once; a hit takes no lock (`open`)
    .wants/<pid>-<id>.json  the objects a prefetcher's next steps need, in order of need (Belady's next use)
    <host>/<bucket>/<key minus .npy>.<sha256[:12]>.npy      a cached object, named by its checksum: a dataset
                            rewritten in the store misses instead of reading stale bytes
    ….part-<pid>-<thread>   a download in flight: created at its full size bound before the first byte, so the
                            space is reserved; renamed into place after its checksum is verified and it is fsynced

Bound: the sum of the sizes of the files under the folder never exceeds `limit`: a download first reserves
its bound, evicting complete objects that no process is downloading, furthest next use first (objects in no
prefetcher's lookahead before those in one; among equals, least recently used). A prefetch is admitted only if
it evicts nothing needed sooner than itself. An evicted object that a process still has memory-mapped stays
readable (POSIX unlink semantics); its blocks are freed when that process lets it go.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sdl.loader.errors import ConfigError, FormatError, SdlError, StorageError
from sdl.loader.storage.cache_faults import damaged_in_store, unusable_folder
from sdl.loader.storage.cache_folder import (
    file_mtime,
    file_size,
    pid_alive,
    touch,
    tree_bytes,
)
from sdl.loader.storage.client import LocalWriteError, S3Client
from sdl.loader.storage.file_locks import flocked
from sdl.loader.storage.verify import checked_download

T = TypeVar("T")
NEVER = float("inf")
METADATA_BYTES = 64 << 10  # kept free of objects for the lock and lookahead files, which are under the bound too
MAX_PUBLISHED = 256  # names per lookahead file (~15 KB), so the metadata stays within METADATA_BYTES


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheEntry:
    """One object to cache: where it lives in the store, its name in the cache, its checksum and a size bound."""

    bucket: str
    key: str
    name: str  # relative path under the cache folder
    checksum: str | None
    max_bytes: int

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(slots=True)
class CacheStats:
    """This process's counters: opens served from the cache, downloads, bytes downloaded."""

    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0


class ShardCache:
    """A cache folder holding at most `limit` bytes (None: no limit), filled from the store by `client`."""

    def __init__(self, root: str | Path, limit: int | None, client: S3Client) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ConfigError(f"cache_limit is {limit!r}, expected a positive number of bytes or None (no limit)")
        self.root, self.limit, self.client = Path(root), limit, client
        try:
            for sub in (".locks", ".wants"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unusable_folder(self.root, exc) from None
        self.stats = CacheStats()

    def __getstate__(self) -> dict:
        return {"root": self.root, "limit": self.limit, "client": self.client}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["limit"], state["client"])

    # Locks

    def _flock(self, path: Path, mode: int) -> contextmanager:
        return flocked(path, mode, lambda exc: unusable_folder(self.root, exc))  # never inherited by a forked worker

    def _entry_lock(self, name: str, mode: int) -> contextmanager:
        return self._flock(self.root / ".locks" / hashlib.sha1(name.encode()).hexdigest()[:24], mode)

    # Opening

    def open(self, entry: CacheEntry, opener: Callable[[Path], T]) -> T:
        """`opener(path)` on the cached copy of `entry`, downloading it first when it is not cached.

        A hit takes no lock (its lock file and stat were ~80 of a ~250 µs open, measured): a cached object is whole
        and never rewritten, and an eviction cannot take it from an opener that has it open (POSIX unlink). An opener
        that fails (not cached, or evicted between two of its reads) is tried again under the entry's lock. A cached
        copy that the opener finds damaged (FormatError: cut short, say) is deleted and downloaded again; a copy just
        downloaded that does not open is a FormatError naming the object's URL: the object in the store is damaged."""
        path = self.root / entry.name
        try:
            opened = opener(path)
        except (SdlError, OSError):
            pass
        else:
            self.stats.hits += 1
            touch(path)  # recency, for the tie-break among objects no prefetcher needs
            return opened
        with self._entry_lock(entry.name, fcntl.LOCK_EX):
            if path.exists():  # another process may have fetched it while we waited for the lock
                try:
                    opened = opener(path)
                except FormatError:
                    path.unlink()  # damaged since it was verified and cached: fetch it again, below
                else:
                    self.stats.hits += 1
                    return opened
            self._download(entry, path, next_use=0.0)
            try:
                return opener(path)
            except FormatError as exc:
                path.unlink()  # of no use: the next open fetches it again
                raise damaged_in_store(entry, path, exc, self.client.endpoint) from None

    def prefetch(self, entry: CacheEntry, next_use: float) -> bool:
        """Fetch `entry` unless cached; False when it would evict something needed sooner (try again later)."""
        path = self.root / entry.name
        if path.exists():
            return True
        with self._entry_lock(entry.name, fcntl.LOCK_EX):
            return path.exists() or self._download(entry, path, next_use=next_use)

    def contains(self, entry: CacheEntry) -> bool:
        return (self.root / entry.name).exists()

    def holds_all(self, entries: Iterable[CacheEntry]) -> bool:
        """Whether every entry is cached, from one listing per folder (a stat each would hand the GIL over each time)."""
        listed: dict[str, set[str]] = {}
        for entry in entries:
            folder, _, name = entry.name.rpartition("/")
            if folder not in listed:
                try:
                    listed[folder] = set(os.listdir(self.root / folder))
                except FileNotFoundError:
                    return False
            if name not in listed[folder]:
                return False
        return True

    # Downloading (the caller holds the entry's exclusive lock)

    def _download(self, entry: CacheEntry, path: Path, next_use: float) -> bool:
        try:
            part = self._reserve(entry, path, next_use)
        except OSError as exc:  # creating or sizing the part file
            raise unusable_folder(self.root, exc, entry) from None
        if part is None:
            return False
        try:
            size = checked_download(self.client, entry, part)
            os.replace(part, path)
        except BaseException as exc:
            part.unlink(missing_ok=True)
            if isinstance(exc, (OSError, LocalWriteError)):  # the cache's disk; the network's errors are StorageErrors
                raise unusable_folder(self.root, exc, entry) from None
            raise
        self.stats.misses += 1
        self.stats.bytes_fetched += size
        return True

    def _reserve(self, entry: CacheEntry, path: Path, next_use: float) -> Path | None:
        """A part file sized to the entry's bound once it fits under the limit (evicting as needed); None when a
        prefetch would have to evict something needed sooner. A demand fetch waits for in-flight downloads."""
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.part-{os.getpid()}-{threading.get_ident()}")
        if self.limit is not None and entry.max_bytes + METADATA_BYTES > self.limit:
            raise ConfigError(f"cache_limit is {self.limit:,} bytes, too small for one object ({entry.url}, up to "
                              f"{entry.max_bytes:,} bytes, + {METADATA_BYTES:,} for metadata); give the cache at least "
                              "two shards' worth")
        deadline = time.monotonic() + self.client.timeout_s
        while True:
            with self._flock(self.root / ".lock", fcntl.LOCK_EX):
                if self._make_room(entry.max_bytes, next_use):
                    with open(part, "wb") as handle:
                        handle.truncate(entry.max_bytes)
                    return part
            if next_use > 0:
                return None
            if time.monotonic() > deadline:
                raise StorageError(f"{entry.url}: the cache {self.root} stayed full ({self.limit:,} bytes) of objects in "
                                   "use or in flight; raise cache_limit")
            time.sleep(0.05)

    def _make_room(self, needed: int, next_use: float) -> bool:
        """Evict (under the global lock) until `needed` bytes fit; whether they do."""
        if self.limit is None:
            return True
        limit = self.limit - METADATA_BYTES
        used = tree_bytes(self.root)
        if used + needed <= limit:
            return True
        self._remove_dead_parts()
        used = tree_bytes(self.root)
        for victim, victim_next_use in self._victims():
            if used + needed <= limit:
                break
            if victim_next_use <= next_use and next_use > 0:
                return False  # a prefetch never evicts what is needed sooner than itself
            with self._entry_lock(victim, fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
                if locked:  # nobody is downloading it (an opener that has it open keeps reading it: POSIX unlink)
                    size = file_size(self.root / victim)
                    (self.root / victim).unlink(missing_ok=True)
                    used -= size
        return used + needed <= limit

    def _victims(self) -> list[tuple[str, float]]:
        """Complete cached objects with their next use, the furthest (or never) first; least recent first among equals."""
        wants = self.next_uses()
        found = []
        for name in self.cached_names():
            path = self.root / name
            found.append((name, wants.get(name, NEVER), file_mtime(path)))
        found.sort(key=lambda item: (-item[1], item[2]))
        return [(name, next_use) for name, next_use, _ in found]

    def cached_names(self) -> list[str]:
        names = []
        for directory, subdirs, files in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            rel = os.path.relpath(directory, self.root)
            names += [name if rel == "." else f"{rel}/{name}" for name in files
                      if not name.startswith(".") and ".part-" not in name]
        return names

    def _remove_dead_parts(self) -> None:
        """Delete part files of processes that died mid-download (kill -9): their reservation is void."""
        for directory, _subdirs, files in os.walk(self.root):
            for name in files:
                if ".part-" in name:
                    pid = int(name.rsplit(".part-", 1)[1].split("-")[0])
                    if not pid_alive(pid):
                        Path(directory, name).unlink(missing_ok=True)

    # Next uses, published by prefetchers

    def publish(self, publisher: str, names: list[str]) -> None:
        """Record `names` (in order of need) as one prefetcher's lookahead. Written in place: a reader that meets
        a half-written file skips it (a hint for eviction, never data), and a rename costs milliseconds here."""
        path = self.root / ".wants" / f"{os.getpid()}-{publisher}.json"
        path.write_text(json.dumps(names[:MAX_PUBLISHED]))

    def withdraw(self, publisher: str) -> None:
        (self.root / ".wants" / f"{os.getpid()}-{publisher}.json").unlink(missing_ok=True)

    def next_uses(self) -> dict[str, float]:
        """For each object in some live prefetcher's lookahead, its earliest position there."""
        out: dict[str, float] = {}
        for path in (self.root / ".wants").glob("*.json"):
            if not pid_alive(int(path.name.split("-", 1)[0])):
                path.unlink(missing_ok=True)
                continue
            try:
                names = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # replaced while we read it
            for position, name in enumerate(names):
                if position < out.get(name, NEVER):
                    out[name] = float(position)
        return out
