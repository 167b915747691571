"""A read-only zarr Store over a dataset's objects in an object store, read through the node cache.

Each key (metadata or chunk) is one object: fetched whole by sdl's own client (its retries, timeouts and
one-line errors) into the bounded node cache, named by its ETag, then read from there; so a chunk is
downloaded once per node, the prefetcher can fetch chunks ahead of need, and a rewritten object misses rather
than reads stale. Which keys exist comes from the listing the dataset was opened with: an absent key (an
all-fill chunk that zarr did not write, `.zattrs`) is answered without a request. zarr is imported here,
and this module only where a zarr store in an object store is opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sdl.loader.storage.remote import RemoteFiles, StoredObject
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype


class CachedObjectStore(Store):
    """The keys under `folder` ("" for the dataset's prefix) of `files`, as listed in `objects`."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, files: RemoteFiles, objects: dict[str, StoredObject], folder: str = "") -> None:
        super().__init__(read_only=True)
        self.files, self.objects = files, objects
        self.start = f"{folder}/" if folder not in ("", ".") else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CachedObjectStore) and (self.files.url, self.start) == (other.files.url, other.start)

    def read(self, key: str) -> bytes | None:
        """The object's bytes from the node cache (fetched first when absent); None when the listing has no such key."""
        stored = self.objects.get(self.start + key)
        if stored is None:
            return None
        entry = self.files.object_entry(self.start + key, stored)
        return self.files.cache.open(entry, lambda path: path.read_bytes())

    async def get(self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None) -> Buffer | None:
        data = await asyncio.to_thread(self.read, key)
        if data is None:
            return None
        return (prototype or default_buffer_prototype()).buffer.from_bytes(_slice(data, byte_range))

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        return self.start + key in self.objects

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError(f"{self.files.url}: a dataset in an object store is read-only to sdl")

    async def delete(self, key: str) -> None:
        raise PermissionError(f"{self.files.url}: a dataset in an object store is read-only to sdl")

    def _keys(self) -> list[str]:
        return [key[len(self.start):] for key in self.objects if key.startswith(self.start)]

    async def list(self) -> AsyncIterator[str]:
        for key in self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        start = f"{prefix.rstrip('/')}/" if prefix else ""
        for name in dict.fromkeys(key[len(start):].split("/", 1)[0] for key in self._keys() if key.startswith(start)):
            yield name


def _slice(data: bytes, byte_range: Any) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start:byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset:]
    if isinstance(byte_range, SuffixByteRequest):
        return data[max(0, len(data) - byte_range.suffix):]
    raise TypeError(f"unexpected byte range {byte_range!r}")
