"""A dataset folder in an object store, read through the node-local cache: small files fetched whole, shards cached."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sdl.loader.errors import FormatError, StorageError
from sdl.loader.storage.cache import CacheEntry, ShardCache
from sdl.loader.storage.client import S3Client
from sdl.loader.storage.location import S3Location, is_remote

NPY_HEADER_MAX = 4096  # a 1-D .npy header is 128 bytes in practice; the format caps what we accept here
DEFAULT_PREFETCH_STEPS = 64


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/sdl/objects` (else `~/.cache/sdl/objects`): shared by every dataset and process of the user."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sdl" / "objects"


class RemoteFiles:
    """The files of the dataset at `url` (s3://bucket/prefix): `read` small ones, `entry` + the cache for shards.
    `timeout_s`: the storage timeout (None: `SDL_STORAGE_TIMEOUT_S`, else 60 s; see `sdl.loader.storage.client`)."""

    def __init__(self, url: str, *, cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 timeout_s: float | None = None, prefetch_steps: int = DEFAULT_PREFETCH_STEPS) -> None:
        self.location = S3Location.parse(url)
        self.client = S3Client(timeout_s)
        self.cache = ShardCache(Path(cache_dir) if cache_dir is not None else default_cache_dir(), cache_limit, self.client)
        self.prefetch_steps = int(prefetch_steps)
        self.host = self.client.endpoint.split("://", 1)[-1].strip("/").replace("/", "_") or "s3"

    @property
    def url(self) -> str:
        return self.location.url()

    def read(self, relative: str) -> bytes:
        return self.client.get_bytes(self.location.bucket, self.location.key(relative))

    def read_head(self, relative: str, count: int, checksum: str | None) -> np.ndarray | None:
        """The first `count` tokens of a shard, by one ranged GET (header included), without caching the shard:
        what a window that spills over a shard boundary needs from the next shard. A part of an object cannot be
        hashed, so the object must say it is the one the manifest lists: the sha256 `sdl prepare` stores with every
        upload (`x-amz-meta-sha256`) equal to `checksum`. None when it carries none (e.g. copied by `aws s3 sync`): the
        caller then reads the whole shard through the cache, which hashes it; StorageError when it names another."""
        raw, metadata = self.client.get_range(self.location.bucket, self.location.key(relative), 0, NPY_HEADER_MAX + count * 8)
        stored = metadata.get("sha256")
        if checksum is not None and stored is None:
            return None
        if checksum is not None and f"sha256:{stored}" != checksum:
            raise StorageError(f"{self.location.url(relative)}: checksum {checksum} in the manifest, the stored object says "
                               f"sha256:{stored}: it was replaced since the manifest was written; re-upload it (re-run sdl "
                               "prepare with the same arguments to the same OUT)")
        handle = io.BytesIO(raw)
        try:
            version = np.lib.format.read_magic(handle)
            shape, _, dtype = (np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0)(handle)
        except ValueError as exc:
            raise FormatError(f"{self.location.url(relative)}: corrupt .npy header ({exc}); re-upload it") from None
        offset = handle.tell()
        if len(shape) != 1 or shape[0] < count or len(raw) < offset + count * dtype.itemsize:
            raise FormatError(f"{self.location.url(relative)}: expected at least {count:,} tokens, found shape {shape}; re-upload it")
        return np.frombuffer(raw, dtype=dtype, count=count, offset=offset)

    def entry(self, relative: str, checksum: str | None, max_bytes: int) -> CacheEntry:
        """The cache entry of a file of this dataset, named by its checksum so a rewritten object never reads stale."""
        key = self.location.key(relative)
        stem, dot, suffix = key.rpartition(".")
        tag = (checksum or "").split(":")[-1][:12] or "unchecked"
        name = f"{self.host}/{self.location.bucket}/{stem}.{tag}.{suffix}" if dot else f"{self.host}/{self.location.bucket}/{key}.{tag}"
        return CacheEntry(bucket=self.location.bucket, key=key, name=name, checksum=checksum, max_bytes=max_bytes)

    def listing(self, relative: str = "") -> dict[str, StoredObject]:
        """Every object under the dataset's prefix (or its `relative` folder): {path inside the dataset: StoredObject}.
        One request per 1,000 objects: what zarr and Arrow datasets, which have no manifest, are opened from."""
        folder = self.location.key(relative) if relative else self.location.prefix
        start = f"{self.location.prefix}/" if self.location.prefix else ""
        objects = self.client.list_objects(self.location.bucket, f"{folder}/" if folder else "")
        return {key[len(start):]: StoredObject(size=size, etag=etag) for key, size, etag in objects}

    def object_entry(self, relative: str, stored: StoredObject) -> CacheEntry:
        """The cache entry of a listed object without a checksum: named by its ETag (a rewritten object misses
        rather than reads stale), bounded by its listed size."""
        key = self.location.key(relative)
        folder, _, base = key.rpartition("/")
        tag = re.sub(r"[^0-9A-Za-z]", "", stored.etag)[:16] or f"size{stored.size}"
        name = f"{self.host}/{self.location.bucket}/{folder + '/' if folder else ''}{tag}-{base}"
        return CacheEntry(bucket=self.location.bucket, key=key, name=name, checksum=None, max_bytes=stored.size)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredObject:
    """What a listing says of one object: its size and ETag (which changes when the object is rewritten)."""

    size: int
    etag: str


def shard_bound(num_tokens: int, itemsize: int) -> int:
    """The most bytes a shard of `num_tokens` tokens may take as a `.npy` file."""
    return NPY_HEADER_MAX + num_tokens * itemsize


def remote_files(path: str | Path, cache_dir: str | Path | None, cache_limit: int | None, prefetch_steps: int,
                 timeout_s: float | None) -> RemoteFiles | None:
    """The object-store side of a TokenWindows dataset at `s3://…` (None for a local path)."""
    if not is_remote(path):
        return None
    return RemoteFiles(str(path), cache_dir=cache_dir, cache_limit=cache_limit, timeout_s=timeout_s, prefetch_steps=prefetch_steps)
