"""Zarr stores in an object store: found, described and indexed from one listing of the prefix and their metadata.

The listing (one request per 1,000 objects) gives every key with its size and ETag: which folders are zarr
stores (a `zarr.json`, `.zarray` or `.zgroup` key), which chunks exist (an absent chunk is all fill value or
damage, as locally), and what names each object in the node cache. The metadata objects are read by GET; the
rules (fields, shapes, dtypes, one length per group, stores that agree) are those of `sdl.loader.index.zarr`,
so the index, and its identity, equal those of a local copy.
"""

from __future__ import annotations

import json
from typing import Any

from sdl.loader.errors import FormatError, InputError
from sdl.loader.index.table import SourceInfo
from sdl.loader.index.zarr import (
    ZARR_META,
    absent_chunk_keys,
    check_same_fields,
    member_fields,
    metadata_object,
)
from sdl.loader.storage.remote import RemoteFiles, StoredObject

Arrays = dict[str, dict[str, tuple[str, dict[str, Any]]]]  # store → field → (its folder, its metadata)


def join(folder: str, name: str) -> str:
    return name if folder in ("", ".") else f"{folder}/{name}"


def meta_key(listing: dict[str, StoredObject], folder: str) -> str | None:
    """The metadata key of the zarr node at `folder`, or None when it is not one."""
    return next((key for name in ZARR_META if (key := join(folder, name)) in listing), None)


def find_remote_zarr_stores(listing: dict[str, StoredObject]) -> list[str]:
    """The folders ("." for the prefix itself) that are zarr stores and lie in no other store, sorted."""
    nodes = {key.rpartition("/")[0] or "." for key in listing if key.rpartition("/")[2] in ZARR_META}
    if "." in nodes:
        return ["."]
    stores = []
    for folder in sorted(nodes):
        parts = folder.split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if not any("/".join(parts[:i]) in nodes for i in range(1, len(parts))):
            stores.append(folder)
    return stores


def read_node(files: RemoteFiles, listing: dict[str, StoredObject], folder: str) -> tuple[str, dict[str, Any]] | None:
    """("array" | "group", metadata) of the zarr node at `folder`, or None."""
    key = meta_key(listing, folder)
    if key is None:
        return None
    try:
        meta = metadata_object(json.loads(files.read(key)), files.location.url(key))
    except ValueError as exc:
        raise FormatError(f"{files.location.url(key)}: unreadable zarr metadata ({exc}); rewrite the array with zarr") from None
    if key.endswith("zarr.json"):
        return meta.get("node_type", "array"), meta
    return ("array" if key.endswith(".zarray") else "group"), meta


def remote_store_arrays(files: RemoteFiles, listing: dict[str, StoredObject], rel: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """{field: (folder, metadata)} of one store: `data` for an array, else each array directly inside its group."""
    node_type, meta = read_node(files, listing, rel)
    if node_type == "array":
        return {"data": ("" if rel == "." else rel, meta)}
    start = "" if rel == "." else f"{rel}/"
    children = sorted({key[len(start):].split("/", 1)[0] for key in listing if key.startswith(start) and "/" in key[len(start):]})
    members = {}
    for child in children:
        node = None if child.startswith(".") else read_node(files, listing, join(rel, child))
        if node is not None and node[0] == "array":
            members[child] = (join(rel, child), node[1])
    if not members:
        raise FormatError(f"{files.location.url(rel)}: a zarr group with no arrays directly inside it; expected arrays of samples")
    return members


def list_remote_zarr_sources(files: RemoteFiles, listing: dict[str, StoredObject]) -> tuple[tuple[SourceInfo, ...], dict[str, Any], Arrays]:
    """(sources, meta, arrays) of the zarr stores under the prefix, as `list_zarr_sources` gives for a local copy."""
    stores = find_remote_zarr_stores(listing)
    if not stores:
        raise InputError(f"{files.url}: no zarr arrays at {files.client.endpoint} (no zarr.json or .zarray key); expected "
                         "a prefix holding zarr stores")
    sources, arrays, absent, first = [], {}, {}, None
    for rel in stores:
        members = arrays[rel] = remote_store_arrays(files, listing, rel)
        length, fields = member_fields(files.location.url(rel), members)
        first = first or (rel, fields)
        check_same_fields(first[0], first[1], rel, fields)
        meta_keys = [meta_key(listing, rel)] + [meta_key(listing, folder) for folder, _ in members.values() if folder != rel]
        sources.append(SourceInfo(path=rel, length=length, size=sum(listing[k].size for k in dict.fromkeys(meta_keys)), mtime_ns=0))
        for name, (folder, meta) in members.items():
            keys = absent_chunk_keys(meta, stored_keys(listing, folder))
            if keys:
                absent[rel if name == "data" else f"{rel}/{name}"] = keys
    return tuple(sources), {"fields": first[1], **({"absent_chunks": absent} if absent else {})}, arrays


def stored_keys(listing: dict[str, StoredObject], folder: str) -> set[str]:
    """The keys under `folder`, relative to it."""
    start = f"{folder}/" if folder else ""
    return {key[len(start):] for key in listing if key.startswith(start)}

