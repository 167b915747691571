"""The shards under TokenWindows: memory-mapped on first use (or read from the node cache of an object store), kept
in a per-process LRU, read across shard boundaries; and which cached objects a batch reads, for the prefetcher.

A mixin of TokenWindows (it uses the dataset's `index`, `remote`, `_lengths`, `_windows`, `stride`,
`_host_dtype`, `max_open_shards`, `_entries` and `_views`), split out so that each file holds one concept.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np
from sdl.loader.format.tokens import open_shard
from sdl.loader.index import OpenSources
from sdl.loader.index.handles import descriptor_room
from sdl.loader.index.remote import open_remote_shard, shard_entry
from sdl.loader.storage import CacheEntry

MAX_HEADS = 256  # shard heads kept per process (each seq_len + shift tokens)
# Shards kept open per process by default. A local map costs a file descriptor and one of the kernel's maps
# (vm.max_map_count, 65,530 by default), not memory: keep every shard of a corpus open, up to LOCAL_OPEN_SHARDS and what
# the hard descriptor limit leaves, so that a global shuffle (each batch in ~B different shards) never reopens one (400
# shards under an LRU of 64: 2.6 ms a batch, against ~45 µs with all of them open). A cached object's map keeps its
# file's disk space after the node cache evicts it: few.
LOCAL_OPEN_SHARDS, REMOTE_OPEN_SHARDS = 8192, 64


def open_shards_limit(max_open_shards: int | None, remote: Any, num_shards: int) -> int:
    """A TokenWindows' `max_open_shards`: as given, else every one of its `num_shards` local shards (up to
    LOCAL_OPEN_SHARDS and the descriptors the hard limit leaves, but at least 64), or REMOTE_OPEN_SHARDS of an object
    store's."""
    if max_open_shards is not None:
        return int(max_open_shards)
    if remote is not None:
        return REMOTE_OPEN_SHARDS
    return max(1, min(num_shards, LOCAL_OPEN_SHARDS, max(REMOTE_OPEN_SHARDS, descriptor_room())))


class ShardAccess:
    def open_sources(self) -> OpenSources:
        """A fresh LRU of open shards. Local shards have their sizes re-checked against the index (a file truncated
        under a running loader is named, not a SIGBUS); cached objects were checked against their checksum."""
        return OpenSources(self.max_open_shards, self._open_shard, None if self.remote is not None else self.index, self._release_maps)

    def _release_maps(self) -> None:
        """Out of file descriptors (see OpenSources): drop the maps held beside the LRU, the last window view and
        the last span view (its plan makes another, if its shards still fit the LRU)."""
        self._views = None
        if self._spanning is not None:
            plan = self._spanning[0]()
            if plan is not None:
                plan._span = None
            self._spanning = None

    def _read_span(self, start: int, length: int, out: np.ndarray | None = None, held: dict | None = None) -> np.ndarray:
        """Global tokens [start, start + length), read across as many shards as they cover (into `out` when given; from
        the maps of `held` {shard: array} where it has them, e.g. a span view's, with no file opened for them)."""
        out = np.empty(length, dtype=self._host_dtype) if out is None else out
        starts, lengths = self._shard_starts, self._shard_lengths
        source_id = bisect_right(starts, start) - 1
        filled = 0
        while filled < length:
            offset = start + filled - starts[source_id]
            take = min(length - filled, lengths[source_id] - offset)
            head = self._head(source_id, take) if filled and self.remote is not None and not self._held(source_id) else None
            if head is not None:
                out[filled:filled + take] = head[:take]
            else:
                shard = held.get(source_id) if held else None
                out[filled:filled + take] = (self._shard(source_id) if shard is None else shard)[offset:offset + take]
            filled += take
            source_id += 1
        return out

    def _shard(self, source_id: int) -> np.ndarray:
        """The memory-mapped shard `source_id`, opened on first use and kept in an LRU of `max_open_shards`."""
        return self._open.get(source_id)

    def _window_view(self, source_id: int, span: int) -> np.ndarray:
        """A read-only view of shard `source_id` whose row i is its tokens [i, i + span): a batch of windows inside the
        shard is one fancy index of it. The last one is kept (it keeps its shard mapped while the LRU may close it)."""
        shard = self._shard(source_id)
        cached = self._views
        if cached is None or cached[0] is not shard or cached[1] != span:
            step = shard.strides[0]
            view = np.lib.stride_tricks.as_strided(shard, (len(shard) - span + 1, span), (step, step), writeable=False)
            cached = self._views = (shard, span, view)
        return cached[2]

    def _open_shard(self, source_id: int) -> np.ndarray:
        if self.remote is not None:
            return open_remote_shard(self.index, self.remote, source_id, self.cache_entry(source_id))
        shard = open_shard(self.index.path_of(source_id), expected_tokens=int(self._lengths[source_id]))
        return shard.view(np.ndarray)  # a plain view of the map: slicing np.memmap runs Python hooks per slice

    # Object storage: what the steps ahead read, for the loader's prefetcher (sdl.loader.storage.prefetch)

    def needs_of(self, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For an array of sample ids: the shard each sample starts in, and the shard whose head it spills into
        (-1: none), same shape. A spill of a few tokens is read by a ranged GET of the next shard's head, not by
        caching that shard (`_read_span`): fetching a whole shard for it would double the bytes of a
        locality-shuffled epoch."""
        first, offsets = self.index.locate((np.asarray(sample_ids, dtype=np.int64) + self._windows.start) * self.stride)
        spills = (offsets + self._head_tokens() > self._lengths[first]) & (first + 1 < len(self._lengths))
        return first, np.where(spills, first + 1, -1)

    def cache_entry(self, source_id: int) -> CacheEntry:
        """The node-cache entry of shard `source_id`, made once."""
        entry = self._entries.get(source_id)
        if entry is None:
            entry = self._entries[source_id] = shard_entry(self.index, self.remote, source_id)
        return entry

    def fetch_head(self, source_id: int) -> None:
        """Read the head of shard `source_id` that windows spilling into it use, ahead of them (the prefetcher
        calls this when the loop reads in this process, num_workers=0); the whole shard, into the node cache, when its
        object does not carry the sha256 a part of it is checked by (the loop then reads it from the cache)."""
        if self._head(source_id, 0) is None:
            self.remote.cache.prefetch(self.cache_entry(source_id), next_use=0.0)

    def _head_tokens(self) -> int:
        return self.seq_len + max(self.shift_choices)  # the longest span a window reads

    def _head(self, source_id: int, take: int) -> np.ndarray | None:
        """The first tokens of remote shard `source_id` (at least `take`), one ranged GET, kept in a small FIFO; None
        when the object cannot show it is the manifest's without being read whole (`RemoteFiles.read_head`)."""
        head = self._heads.get(source_id)
        if head is None or len(head) < take:
            count = max(take, min(self._head_tokens(), int(self._lengths[source_id])))
            head = self.remote.read_head(self.index.sources.paths[source_id], count, self.index.sources.checksums[source_id])
            if head is None:
                return None
            self._heads[source_id] = head  # an OrderedDict: the prefetcher's thread adds to it too
            while len(self._heads) > MAX_HEADS:
                self._heads.popitem(last=False)
        return head

    def _held(self, source_id: int) -> bool:
        """Whether shard `source_id` is open in this process or in the node cache (a remote dataset)."""
        return source_id in self._open.items or self.remote.cache.contains(self.cache_entry(source_id))

    @property
    def num_open_shards(self) -> int:
        return len(self._open)

    # Pickling (DataLoader workers): never ship open memory maps; each process opens its own.

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("_open", "_views", "_spanning")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open, self._views, self._spanning = self.open_sources(), None, None
