"""The shards under TokenWindows: memory-mapped on first use (or read from the node cache of an object store), kept
in a per-process LRU, read across shard boundaries; and which cached objects a batch reads, for the prefetcher.

A mixin of TokenWindows (it uses the dataset's `index`, `remote`, `_lengths`, `_windows`, `stride`,
`_host_dtype`, `max_open_shards`, `_entries` and `_views`), split out so that each file holds one concept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sdl.loader.format.tokens import open_shard
from sdl.loader.index import OpenSources
from sdl.loader.index.remote import open_remote_shard, shard_entry
from sdl.loader.storage import CacheEntry


class ShardAccess:
    def open_sources(self) -> OpenSources:
        """A fresh LRU of open shards. Local shards have their sizes re-checked against the index (a file truncated
        under a running loader is named, not a SIGBUS); cached objects were checked against their checksum."""
        return OpenSources(self.max_open_shards, self._open_shard, None if self.remote is not None else self.index)

    def _read_span(self, start: int, length: int) -> np.ndarray:
        """Global tokens [start, start + length), read across as many shards as they cover."""
        out = np.empty(length, dtype=self._host_dtype)
        source_id = int(np.searchsorted(self.index.offsets, start, side="right")) - 1
        filled = 0
        while filled < length:
            offset = start + filled - int(self.index.offsets[source_id])
            take = min(length - filled, int(self._lengths[source_id]) - offset)
            if filled and self.remote is not None and not self._held(source_id):
                out[filled:filled + take] = self.remote.read_head(self.index.sources.paths[source_id], take)
            else:
                out[filled:filled + take] = self._shard(source_id)[offset:offset + take]
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
            return open_remote_shard(self.index, self.remote, source_id)
        shard = open_shard(self.index.path_of(source_id), expected_tokens=int(self._lengths[source_id]))
        return shard.view(np.ndarray)  # a plain view of the map: slicing np.memmap runs Python hooks per slice

    # Object storage: which cached objects a batch reads (for the loader's prefetcher)

    def entries_for(self, sample_ids: list[int]) -> list[CacheEntry]:
        """The objects the samples start in, in order of first use. A window's spill into the next shard is read
        from the cache when that shard is there, else by a ranged GET of the shard's head (see `_read_span`):
        fetching a whole shard for a few tokens would double the bytes of a locality-shuffled epoch."""
        starts = (np.asarray(sample_ids, dtype=np.int64) + self._windows.start) * self.stride
        first, _ = self.index.locate(starts)
        return [self._entry(i) for i in dict.fromkeys(first.tolist())]

    def _entry(self, source_id: int) -> CacheEntry:
        entry = self._entries.get(source_id)
        if entry is None:
            entry = self._entries[source_id] = shard_entry(self.index, self.remote, source_id)
        return entry

    def _held(self, source_id: int) -> bool:
        """Whether shard `source_id` is open in this process or in the node cache (a remote dataset)."""
        return source_id in self._open.items or self.remote.cache.contains(self._entry(source_id))

    @property
    def num_open_shards(self) -> int:
        return len(self._open)

    # Pickling (DataLoader workers): never ship open memory maps; each process opens its own.

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("_open", "_views")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open, self._views = self.open_sources(), None
