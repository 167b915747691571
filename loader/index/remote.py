"""The index of a token dataset in an object store: built from its manifest alone, in one request, no listing.

Every shard's length and checksum are in the manifest, so nothing else is read to open the dataset; each
shard's `.npy` header is checked when the cache opens it. Sizes and mtimes are not known (0): the
descriptor (the manifest's sha256) stands for them in the fingerprint. The identity is that of a local
copy of the same dataset, so a loader state moves between the two.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from sdl.loader.errors import FormatError
from sdl.loader.format.tokens import MANIFEST_NAME, Manifest, open_shard, parse_manifest
from sdl.loader.index.table import GlobalIndex, SourceInfo
from sdl.loader.index.tokens import token_meta
from sdl.loader.storage.cache import CacheEntry
from sdl.loader.storage.client import Missing
from sdl.loader.storage.remote import RemoteFiles, shard_bound


def read_remote_manifest(files: RemoteFiles) -> tuple[Manifest, bytes]:
    """The manifest of a remote token dataset (and its bytes); a missing one is named like a local one."""
    where = files.location.url(MANIFEST_NAME)
    try:
        raw = files.read(MANIFEST_NAME)
    except Missing:
        raise FormatError(f"{files.url}: no {MANIFEST_NAME} at {files.client.endpoint}; expected a token dataset written by "
                          "sdl prepare (check the bucket and prefix, or run sdl prepare with this OUT)") from None
    return parse_manifest(raw, where=where), raw


def open_remote_index(url: str, files: RemoteFiles | None = None) -> GlobalIndex:
    """The index of the token dataset at `url` (s3://bucket/prefix), from one GET of its manifest."""
    files = files or RemoteFiles(url)
    manifest, raw = read_remote_manifest(files)
    sources = tuple(SourceInfo(path=shard.file, length=shard.num_tokens, size=0, mtime_ns=0, checksum=shard.checksum)
                    for shard in manifest.shards)
    descriptor = {"file": MANIFEST_NAME, "sha256": hashlib.sha256(raw).hexdigest()}
    return GlobalIndex(kind="tokens", root=files.url, sources=sources, meta=token_meta(manifest, descriptor))


def shard_entry(index: GlobalIndex, files: RemoteFiles, source_id: int) -> CacheEntry:
    """The cache entry of shard `source_id` of a remote token index: its key, checksum and size bound."""
    itemsize = np.dtype(index.meta["dtype"]).itemsize
    return files.entry(index.sources.paths[source_id], index.sources.checksums[source_id],
                       shard_bound(int(index.sources.lengths[source_id]), itemsize))


def open_remote_shard(index: GlobalIndex, files: RemoteFiles, source_id: int) -> np.ndarray:
    """Shard `source_id` memory-mapped from the node cache (downloaded first when not cached), header checked."""
    expected = int(index.sources.lengths[source_id])
    return files.cache.open(shard_entry(index, files, source_id), lambda path: open_shard(path, expected).view(np.ndarray))


def download_for_validation(files: RemoteFiles, relative: str, folder: Path) -> Path | None:
    """`relative` downloaded as is (no cache, no checksum check: validation reports what it finds) into `folder`;
    None when the object does not exist."""
    path = folder / relative.replace("/", "_")
    try:
        with open(path, "wb") as handle:
            files.client.download(files.location.bucket, files.location.key(relative), handle)
    except Missing:
        path.unlink(missing_ok=True)
        return None
    return path
