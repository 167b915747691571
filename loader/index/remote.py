"""The index of a dataset in an object store. A token dataset's is built from its manifest alone, in one request, no
listing; zarr and Arrow datasets, which have no manifest, are opened from one listing of the prefix
(`sdl.loader.index.remote_zarr`, `sdl.loader.index.remote_arrow`).

Every shard's length and checksum are in the manifest, so nothing else is read to open the dataset; each
shard's `.npy` header is checked when the cache opens it. Sizes and mtimes are not known (0): the
descriptor (the manifest's sha256) stands for them in the fingerprint. The identity is that of a local
copy of the same dataset, so a loader state moves between the two.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import FormatError, InputError
from sdl.loader.format.tokens import MANIFEST_NAME, Manifest, open_shard, parse_manifest
from sdl.loader.index.table import GlobalIndex, SourceInfo
from sdl.loader.index.tokens import token_meta
from sdl.loader.storage.cache import CacheEntry
from sdl.loader.storage.client import Missing
from sdl.loader.storage.remote import RemoteFiles, StoredObject, shard_bound


class NoManifest(FormatError):
    """The prefix holds no manifest.json (not a token dataset)."""


def read_remote_manifest(files: RemoteFiles) -> tuple[Manifest, bytes]:
    """The manifest of a remote token dataset (and its bytes); a missing one is named like a local one."""
    where = files.location.url(MANIFEST_NAME)
    try:
        raw = files.read(MANIFEST_NAME)
    except Missing:
        raise NoManifest(f"{files.url}: no {MANIFEST_NAME} at {files.client.endpoint}; expected a token dataset written by "
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


def open_remote_shard(index: GlobalIndex, files: RemoteFiles, source_id: int, entry: CacheEntry | None = None) -> np.ndarray:
    """Shard `source_id` memory-mapped from the node cache (downloaded first when not cached), header checked;
    `entry`: its `shard_entry` when the caller keeps them."""
    expected = int(index.sources.lengths[source_id])
    entry = entry or shard_entry(index, files, source_id)
    return files.cache.open(entry, lambda path: open_shard(path, expected).view(np.ndarray))


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


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteDataset:
    """A dataset in an object store, opened: its index, and for zarr and Arrow the listing its objects are cached by."""

    index: GlobalIndex
    objects: dict[str, StoredObject] = field(default_factory=dict)  # path inside the dataset → size, ETag
    arrays: dict[str, dict[str, tuple[str, dict[str, Any]]]] = field(default_factory=dict)  # zarr: store → field → (folder, meta)


def remote_kind(files: RemoteFiles, listing: dict[str, StoredObject]) -> str:
    """"zarr" or "arrow" for a prefix without a manifest, from its listing; a one-line InputError for anything else."""
    from sdl.loader.index.remote_zarr import find_remote_zarr_stores

    if not listing:
        raise InputError(f"{files.url}: no {MANIFEST_NAME} at {files.client.endpoint}, and no object under the prefix; expected "
                         "a token dataset written by sdl prepare, zarr stores or Arrow files (check the bucket and prefix)")
    kinds = {"zarr"} if find_remote_zarr_stores(listing) else set()
    if {"state.json", "dataset_dict.json"} & set(listing) or any("/" not in key and key.endswith(".arrow") for key in listing):
        kinds.add("arrow")
    if len(kinds) == 1:
        return kinds.pop()
    if kinds:
        raise InputError(f"{files.url}: a prefix mixing zarr stores and Arrow files; expected one kind per dataset")
    jobs = sorted({key.split("/")[0] for key in listing if key.endswith(f"/{MANIFEST_NAME}")})
    if jobs:
        raise InputError(f"{files.url}: job prefixes ({', '.join(jobs[:3])}, …) but no {MANIFEST_NAME}; run `sdl index {files.url}` to join them")
    raise InputError(f"{files.url}: no {MANIFEST_NAME}, zarr arrays or Arrow files at {files.client.endpoint}; expected one of those")


def open_remote_dataset(files: RemoteFiles, kind: str | None = None, split: str | None = None) -> RemoteDataset:
    """The dataset at `files.url` of `kind` (detected when None: a manifest makes it a token dataset)."""
    if kind in (None, "tokens") and split is None:
        try:
            return RemoteDataset(index=open_remote_index(files.url, files))
        except NoManifest:
            if kind == "tokens":
                raise
    if kind == "tokens":
        raise InputError(f"{files.url}: a split ({split!r}) selects part of an Arrow dataset, not of a token dataset")
    listing = files.listing()
    if kind is None and split is not None and MANIFEST_NAME in listing:
        raise InputError(f"a split ({split!r}) selects part of an Arrow dataset; {files.url} is a token dataset (it holds "
                         f"{MANIFEST_NAME})")
    kind = kind or remote_kind(files, listing)
    if kind == "zarr":
        from sdl.loader.index.remote_zarr import list_remote_zarr_sources

        if split is not None:
            raise InputError(f"a split ({split!r}) selects part of an Arrow dataset; {files.url} is a zarr dataset")
        sources, meta, arrays = list_remote_zarr_sources(files, listing)
        return RemoteDataset(index=GlobalIndex(kind="zarr", root=files.url, sources=sources, meta=meta), objects=listing, arrays=arrays)
    if kind != "arrow":
        raise InputError(f"kind {kind!r}, expected one of tokens, zarr, arrow")
    from sdl.loader.index.remote_arrow import list_remote_arrow_sources

    sources, meta = list_remote_arrow_sources(files, listing, split)
    return RemoteDataset(index=GlobalIndex(kind="arrow", root=files.url, sources=sources, meta=meta), objects=listing)
