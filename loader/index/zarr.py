"""Zarr sources: one source per store, read from the metadata files alone (zarr is not imported to index).

Zarr v2 `.zarray`/`.zgroup` or v3 `zarr.json`. A *store* is one source:
  - a zarr array: its samples have one field, `"data"`;
  - a zarr group: its samples have one field per array directly inside it (`"images"`, `"labels"`),
    all of the same first-axis length.
The root is a store, or a folder searched recursively for stores (hidden folders skipped). Every
store must have the same fields with the same trailing shape and dtype. A store's size and mtime are
those of its metadata files: resizing or recreating an array rewrites them (a chunk rewritten in
place changes no length, so no offset; `sdl index --validate` decodes every chunk).

Chunks: an array's shape and chunk shape call for a grid of chunk files, keyed `c/0/1` (v3 default
encoding, separator from `chunk_key_encoding`), `0.1` or `0/1` (v2, `dimension_separator`). zarr
skips writing a chunk that is all fill value, so an absent chunk is data or damage; the index
records the chunks absent when it is built (`meta["absent_chunks"]`, `{array: [key, …]}`, only
arrays with some), and `--validate` fails on any other absent chunk.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sdl.loader.errors import FormatError, InputError
from sdl.loader.format.entries import refuse_broken_link, what_is
from sdl.loader.index.table import SourceInfo
from sdl.loader.index.zarr_dtypes import recorded_dtype

ZARR_META = ("zarr.json", ".zarray", ".zgroup")


def zarr_node(directory: Path) -> tuple[str, dict[str, Any]] | None:
    """("array" | "group", metadata) when `directory` is a zarr node, else None."""
    if (directory / "zarr.json").is_file():
        meta = _read_json(directory / "zarr.json")
        return meta.get("node_type", "array"), meta
    if (directory / ".zarray").is_file():
        return "array", _read_json(directory / ".zarray")
    if (directory / ".zgroup").is_file():
        return "group", _read_json(directory / ".zgroup")
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return metadata_object(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable zarr metadata ({exc}); rewrite the array with zarr") from None


def metadata_object(meta: Any, where: Any) -> dict[str, Any]:
    """`meta` when it is a JSON object, as every zarr metadata file is; a one-line FormatError naming `where` if not."""
    if not isinstance(meta, dict):
        raise FormatError(f"{where}: holds {json.dumps(meta)[:40]}, expected a JSON object of zarr metadata (shape, "
                          "dtype, chunks); the file is damaged: rewrite the array with zarr")
    return meta


def find_zarr_stores(root: Path) -> list[str]:
    """Relative paths ("." for the root itself) of the zarr stores at or under `root`, sorted.

    What would hide a store is refused, as `sdl prepare` refuses it in an input folder, rather than skipped (the
    dataset would lose the store's items): a link that leads nowhere, a link to a folder that is not a store
    (`os.walk` does not follow it), a folder named `*.zarr` with no zarr metadata and no store inside."""
    if zarr_node(root) is not None:
        return ["."]
    found, unmarked = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                refuse_broken_link(Path(dirpath, name), root)
        for name in list(dirnames):
            path, rel = Path(dirpath, name), os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if zarr_node(path) is not None:
                found.append(rel)
                dirnames.remove(name)
            elif path.is_symlink():
                raise InputError(f"{path}: {what_is(path)}, not a zarr store, in the zarr dataset {root}; sdl follows links to "
                                 "stores only (a link back up would list stores twice): link the stores themselves, or replace "
                                 "the link by the folder")
            elif name.endswith(".zarr"):
                unmarked.append(rel)
    for rel in unmarked:
        if not any(store.startswith(f"{rel}/") for store in found):
            raise InputError(f"{root / rel}: a folder named like a zarr store without zarr metadata (zarr.json, .zarray or "
                             ".zgroup) or a store inside; restore the store's metadata from a copy, or move the folder out")
    return sorted(found)


def _array_fields(directory: Path, meta: dict[str, Any]) -> tuple[tuple[int, ...], str]:
    shape = meta.get("shape", ())
    if not isinstance(shape, list | tuple) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise FormatError(f"{directory}: zarr shape {json.dumps(shape)[:40]}; expected a list of non-negative integers; "
                          "the metadata is damaged: rewrite the array with zarr")
    shape = tuple(shape)
    if not shape:
        raise FormatError(f"{directory}: a 0-d zarr array; expected at least one axis (one sample per first-axis item)")
    return shape, recorded_dtype(directory, meta.get("data_type", meta.get("dtype")))


def describe_zarr_store(root: Path, rel: str) -> tuple[int, dict[str, dict[str, Any]], list[Path]]:
    """(first-axis length, {field: {"shape": trailing, "dtype": ...}}, metadata files) of one store."""
    directory = root / rel
    node_type, meta = zarr_node(directory)
    meta_files = _meta_files(directory)
    if node_type == "array":
        members = {"data": (directory, meta)}
    else:
        members = {child.name: (child, child_meta) for child, child_meta in _group_arrays(directory)}
        meta_files += [f for child, _ in members.values() for f in _meta_files(child)]
        if not members:
            raise FormatError(f"{directory}: a zarr group with no arrays directly inside it; expected arrays of samples")
    return *member_fields(directory, members), meta_files


def member_fields(where: Any, members: dict[str, tuple[Any, dict[str, Any]]]) -> tuple[int, dict[str, dict[str, Any]]]:
    """(first-axis length, {field: {"shape": trailing, "dtype": ...}}) of a store's arrays {field: (where, metadata)}."""
    lengths, fields = {}, {}
    for name, (path, array_meta) in members.items():
        shape, dtype = _array_fields(path, array_meta)
        lengths[name] = shape[0]
        fields[name] = {"shape": list(shape[1:]), "dtype": dtype}
    if len(set(lengths.values())) > 1:
        raise FormatError(f"{where}: arrays of different first-axis lengths {lengths}; expected one length per group")
    return next(iter(lengths.values())), fields


def check_same_fields(first: str, first_fields: dict[str, Any], rel: str, fields: dict[str, Any]) -> None:
    if fields != first_fields:
        raise FormatError(
            f"zarr stores disagree: {first} has {_fields_text(first_fields)}, {rel} has {_fields_text(fields)}; "
            "every store must have the same arrays with the same trailing shape and dtype"
        )


def list_zarr_sources(root: Path) -> tuple[tuple[SourceInfo, ...], dict[str, Any]]:
    """One source per zarr store: length = first-axis items; all stores must agree on fields, shapes, dtypes."""
    stores = find_zarr_stores(root)
    if not stores:
        raise InputError(f"{root}: no zarr arrays found (no zarr.json or .zarray); expected a folder of zarr stores")
    sources, first_fields, first = [], None, None
    for rel in stores:
        length, fields, meta_files = describe_zarr_store(root, rel)
        if first_fields is None:
            first_fields, first = fields, rel
        check_same_fields(first, first_fields, rel, fields)
        size, mtime_ns = _stat_files(meta_files)
        sources.append(SourceInfo(path=rel, length=length, size=size, mtime_ns=mtime_ns))
    absent = {name: keys for rel in stores for name, directory, meta in store_arrays(root, rel)
              if (keys := missing_chunks(directory, meta))}
    return tuple(sources), {"fields": first_fields, **({"absent_chunks": absent} if absent else {})}


def _stat_files(paths: list[Path]) -> tuple[int, int]:
    stats = [p.stat() for p in paths]
    return sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)


def _meta_files(directory: Path) -> list[Path]:
    return [directory / name for name in ZARR_META if (directory / name).is_file()]


def zarr_store_stat(root: str, rel: str) -> tuple[int, int]:
    """(size, mtime_ns) of a store's metadata files (the store's own and its member arrays'), as listed."""
    directory = Path(root) / rel
    node = zarr_node(directory) if directory.is_dir() else None
    if node is None:
        raise FileNotFoundError(directory)
    files = _meta_files(directory)
    if node[0] == "group":
        files += [f for child, _ in _group_arrays(directory) for f in _meta_files(child)]
    return _stat_files(files)


def _group_arrays(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    members = []
    for child in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        node = zarr_node(child)
        if node is not None and node[0] == "array":
            members.append((child, node[1]))
    return members


def _fields_text(fields: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{name} [*, {', '.join(map(str, f['shape']))}] {f['dtype']}".replace("[*, ]", "[*]") for name, f in fields.items())


def store_arrays(root: Path, rel: str) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, folder, metadata) of each array of one store: the store itself, or the arrays inside its group."""
    directory = root / rel
    node_type, meta = zarr_node(directory)
    if node_type == "array":
        return [(rel, directory, meta)]
    return [(f"{rel}/{child.name}", child, child_meta) for child, child_meta in _group_arrays(directory)]


def _chunk_key(meta: dict[str, Any]) -> tuple[tuple[int, ...], Callable[[tuple[int, ...]], str]]:
    """(chunk shape, the key of a chunk's grid index) of a zarr v2 or v3 array."""
    if meta.get("zarr_format") == 3:
        chunks = tuple(meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", ()))
        encoding = meta.get("chunk_key_encoding") or {"name": "default"}
        separator = (encoding.get("configuration") or {}).get("separator")
        if encoding.get("name") == "v2":
            return chunks, lambda idx: (separator or ".").join(map(str, idx)) or "0"
        return chunks, lambda idx: (separator or "/").join(["c", *map(str, idx)])
    separator = meta.get("dimension_separator") or "."
    return tuple(meta.get("chunks", ())), lambda idx: separator.join(map(str, idx)) or "0"


def expected_chunks(meta: dict[str, Any]) -> Iterator[tuple[str, tuple[slice, ...]]]:
    """(key, the region it holds) of every chunk the array's shape and chunking call for, in grid order."""
    shape = tuple(meta.get("shape", ()))
    chunks, key = _chunk_key(meta)
    for idx in itertools.product(*(range(-(-size // max(chunk, 1))) for size, chunk in zip(shape, chunks))):
        yield key(idx), tuple(slice(i * c, min((i + 1) * c, size)) for i, c, size in zip(idx, chunks, shape))


def missing_chunks(directory: Path, meta: dict[str, Any]) -> list[str]:
    """Keys of the chunks the grid calls for that have no file in the array's folder (one directory walk)."""
    stored = set()
    for dirpath, _, names in os.walk(directory):
        rel = os.path.relpath(dirpath, directory).replace(os.sep, "/")
        stored.update(name if rel == "." else f"{rel}/{name}" for name in names)
    return absent_chunk_keys(meta, stored)


def absent_chunk_keys(meta: dict[str, Any], stored: set[str]) -> list[str]:
    """Keys of the chunks the grid calls for that are not among `stored` (keys relative to the array)."""
    return [key for key, _ in expected_chunks(meta) if key not in stored]


def band_chunk_keys(meta: dict[str, Any], band: int) -> list[str]:
    """Keys of the chunks holding first-axis chunk row `band` (items band·chunk0 … (band+1)·chunk0 - 1)."""
    shape = tuple(meta.get("shape", ()))
    chunks, key = _chunk_key(meta)
    rest = itertools.product(*(range(-(-size // max(chunk, 1))) for size, chunk in zip(shape[1:], chunks[1:])))
    return [key((band, *idx)) for idx in rest]


def first_chunk_rows(meta: dict[str, Any]) -> int:
    """Items per chunk along the first axis."""
    chunks, _ = _chunk_key(meta)
    return max(1, int(chunks[0])) if chunks else 1


def chunks_gone_since(previous: dict[str, Any] | None, index: Any) -> dict[str, list[str]]:
    """{array: chunk keys} absent in the zarr `index` just built that the `previous` cache (its raw JSON, or None)
    found present, for stores whose metadata files are unchanged since (a chunk file removed in place: lost, or
    emptied on purpose by zarr writing fill values; a rebuild cannot tell which, so `sdl index` says so)."""
    if not isinstance(previous, dict) or previous.get("kind") != "zarr" or index.kind != "zarr":
        return {}
    try:
        old = previous["sources"]
        stats = {path: (size, mtime) for path, size, mtime in zip(old["path"], old["size"], old["mtime_ns"], strict=True)}
        before = {str(k): set(v) for k, v in (previous.get("meta") or {}).get("absent_chunks", {}).items()}
    except (KeyError, TypeError, ValueError):
        return {}  # a damaged cache: nothing to compare with
    unchanged = {path for path, size, mtime in zip(index.sources.paths, index.sources.sizes.tolist(), index.sources.mtime_ns.tolist())
                 if stats.get(path) == (size, mtime)}
    gone = {}
    for array, keys in index.meta.get("absent_chunks", {}).items():
        if any(array == path or array.startswith(f"{path}/") for path in unchanged):
            if new := [key for key in keys if key not in before.get(array, set())]:
                gone[array] = new
    return gone
