"""ZarrSamples and ArrowRows in an object store (`s3://bucket/prefix`): opened from one listing, read through the
bounded node cache, and the objects a batch reads named for the loader's order-aware prefetcher.

A mixin of IndexedSamples (it uses `index`, `kind`, and for zarr `fields`); the objects are those of the
listing the dataset was opened with (`sdl.loader.index.remote.RemoteDataset`): Arrow files, zarr chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import FormatError
from sdl.loader.index import GlobalIndex
from sdl.loader.index.remote import RemoteDataset, open_remote_dataset
from sdl.loader.index.zarr import band_chunk_keys, first_chunk_rows
from sdl.loader.storage import CacheEntry, RemoteFiles


class RemoteSamples:
    remote: RemoteFiles | None = None
    dataset: RemoteDataset | None = None

    def open_remote(self, url: str, split: str | None, cache_dir: str | Path | None, cache_limit: int | None,
                    prefetch_steps: int, timeout_s: float | None) -> GlobalIndex:
        """Open the dataset at `url` (one listing) and keep what reading it through the node cache needs."""
        self.remote = RemoteFiles(url, cache_dir=cache_dir, cache_limit=cache_limit, timeout_s=timeout_s,
                                  prefetch_steps=prefetch_steps)
        self.dataset = open_remote_dataset(self.remote, self.kind, split)
        self._entries: dict[Any, list[CacheEntry]] = {}
        return self.dataset.index

    def where(self, source_id: int) -> str:
        """Source `source_id`'s path or URL, for messages."""
        if self.remote is None:
            return str(self.index.path_of(source_id))
        return self.remote.location.url(self.index.sources.paths[source_id])

    def object_entry(self, relative: str) -> CacheEntry:
        stored = self.dataset.objects.get(relative)
        if stored is None:
            raise FormatError(f"{self.remote.location.url(relative)}: not in the store at {self.remote.client.endpoint} "
                              "when the dataset was opened; upload the whole dataset again")
        return self.remote.object_entry(relative, stored)

    def entries_for(self, sample_ids: list[int]) -> list[CacheEntry]:
        """The objects the samples read, in order of first use: their Arrow files, or their zarr chunks (every chunk
        of the first-axis band holding the item, for each selected field)."""
        source_ids, offsets = self.index.locate(np.asarray(sample_ids, dtype=np.int64))
        if self.kind == "arrow":
            paths = self.index.sources.paths
            return [self._cached(s, lambda s=s: [self.object_entry(paths[s])])[0] for s in dict.fromkeys(source_ids.tolist())]
        out: dict[CacheEntry, None] = {}
        for source_id, offset in zip(source_ids.tolist(), offsets.tolist()):
            for name in self.fields:
                folder, meta = self.dataset.arrays[self.index.sources.paths[source_id]][name]
                band = offset // first_chunk_rows(meta)
                for entry in self._cached((source_id, name, band), lambda: self._band_entries(folder, meta, band)):
                    out[entry] = None
        return list(out)

    def _cached(self, key: Any, make: Any) -> list[CacheEntry]:
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = make()
        return found

    def _band_entries(self, folder: str, meta: dict[str, Any], band: int) -> list[CacheEntry]:
        keys = (f"{folder}/{key}" if folder else key for key in band_chunk_keys(meta, band))
        return [self.remote.object_entry(key, self.dataset.objects[key]) for key in keys if key in self.dataset.objects]
