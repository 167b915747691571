"""Building a GlobalIndex (headers only) and its cache file `<dataset>/.sdl/index.json`: write, open, detect staleness.

The cache's layout and what its fingerprint covers are specified in `sdl.loader.index.table`; the
sources of each kind are listed by `sdl.loader.index.kinds`. This module writes the cache
atomically, and refuses a cache that no longer matches the files on disk.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import FormatError, IndexStaleError, InputError
from sdl.loader.format.atomic import atomic_write_json, remove_stale_temporaries
from sdl.loader.format.tokens import CACHE_DIR
from sdl.loader.index.handles import with_descriptors
from sdl.loader.index.kinds import (
    LISTERS,
    SOURCE_STATS,
    detect_kind,
    source_set_changed,
)
from sdl.loader.index.table import (
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_VERSION,
    KINDS,
    GlobalIndex,
    SourceTable,
    source_fingerprint,
)
from sdl.loader.index.tokens import descriptor_of
from sdl.loader.index.zarr_dtypes import numpy_parses
from sdl.loader.storage.location import is_remote


def cache_path(root: str | Path, split: str | None = None) -> Path:
    return Path(root) / CACHE_DIR / (INDEX_FILE if split is None else f"index-{split}.json")


def build_index(root: str | Path, kind: str | None = None, write_cache: bool = True, *, split: str | None = None) -> GlobalIndex:
    """List the sources of `root` (headers only), and write the cache unless told not to.

    `split` selects one split of an Arrow dataset (a HuggingFace cache folder or DatasetDict). An `s3://` token
    dataset is indexed from its manifest; nothing is written to the store.
    """
    if is_remote(root):
        return _open_remote(str(root), kind, split)
    root = Path(root)
    kind = kind or detect_kind(root)
    if kind not in KINDS:
        raise InputError(f"kind {kind!r}, expected one of {', '.join(KINDS)}")
    if split is not None and kind != "arrow":
        raise InputError(f"a split ({split!r}) selects part of an Arrow dataset; {root} is a {kind} dataset")
    sources, meta = LISTERS[kind](root, **({"split": split} if split is not None else {}))
    index = GlobalIndex(kind=kind, root=str(root), sources=sources, meta=meta)
    if write_cache:
        try:
            target = cache_path(root, split)
            if target.parent.is_dir():  # what a build killed while writing left behind (dead writers' files only)
                remove_stale_temporaries(target.parent, target.name)
            atomic_write_json(target, index.to_dict())
        except OSError:
            pass  # a read-only dataset still opens; it just rebuilds (headers only) next time
    return index


def current_sources(index: GlobalIndex) -> tuple[SourceTable, dict[str, Any] | None]:
    """The indexed sources with their sizes, mtimes and inodes as on disk now, and the descriptor's (one stat per source)."""
    root = str(index.root)
    descriptor = index.meta.get("descriptor")
    if descriptor is not None:
        path = Path(root) / descriptor["file"]
        descriptor = {**descriptor_of(path), "file": descriptor["file"]} if path.exists() else None  # the file as recorded
        # (a DatasetDict's is "<split>/state.json")
    sizes = np.empty(len(index.sources), dtype=np.int64)
    mtimes = np.empty(len(index.sources), dtype=np.int64)
    inodes = np.zeros(len(index.sources), dtype=np.uint64)  # 0: unknown (a zarr store is many files)
    stat_source, stat, prefix = SOURCE_STATS.get(index.kind), os.stat, root + "/"
    rel = ""
    try:  # the hot loop of opening from cache: one stat per source (~3 us each), nothing else
        if stat_source is None:
            for i, rel in enumerate(index.sources.paths):
                result = stat(prefix + rel)
                sizes[i], mtimes[i], inodes[i] = result.st_size, result.st_mtime_ns, result.st_ino
        else:
            for i, rel in enumerate(index.sources.paths):
                sizes[i], mtimes[i] = stat_source(root, rel)
    except FileNotFoundError:
        raise IndexStaleError(f"{root}/{rel}: listed in the cached index but missing; run `sdl index {root}` to rebuild the index") from None
    return SourceTable(index.sources.paths, index.sources.lengths, sizes, mtimes, index.sources.checksums, inodes), descriptor


def current_fingerprint(index: GlobalIndex) -> str:
    """The fingerprint of the files as they are on disk now (one stat per source, nothing read)."""
    return source_fingerprint(*current_sources(index))


def _what_changed(index: GlobalIndex, data: dict[str, Any]) -> str | None:
    """Why the cache `data` no longer describes the files (naming the first changed file), or None when it does (and
    then the files' inodes, as found, are kept on the index's table)."""
    if index.fingerprint != data.get("fingerprint") or index.identity != data.get("identity"):
        return "the cache file was edited"  # the identity covers the meta that describes the data (dtype, fields, schema)
    current, descriptor = current_sources(index)
    if source_fingerprint(current, descriptor) != index.fingerprint:
        changed = np.flatnonzero((current.sizes != index.sources.sizes) | (current.mtime_ns != index.sources.mtime_ns))
        if len(changed):
            return f"{index.sources.paths[int(changed[0])]} was resized or rewritten"
        return f"{index.meta['descriptor']['file']} was rewritten or removed"
    if index.kind != "tokens" and source_set_changed(index):
        return "a source was added or removed"
    index.sources.inodes = current.inodes  # what a running loader compares the files with (see SourceTable)
    return None


def _written_before(data: dict[str, Any]) -> bool:
    """Whether a cache was written by an earlier sdl that recorded less (rebuilt from headers, as another version's):
    an Arrow index from before its columns holding nulls were recorded, a zarr index that recorded a field's dtype by a
    name numpy does not parse back (`str128`). Zarr's is otherwise kept: it holds the chunks it found absent, which a
    rebuild could not tell from chunks lost since."""
    meta = data.get("meta")
    if not isinstance(meta, dict):
        return False  # malformed, not old: refused below
    fields = meta.get("fields")
    if data.get("kind") == "zarr" and isinstance(fields, dict):
        return not all(isinstance(field, dict) and numpy_parses(field.get("dtype")) for field in fields.values())
    return data.get("kind") == "arrow" and "null_columns" not in meta


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the parts of a cache's meta that its identity does not cover (and so no edit check sees)."""
    nulls, absent = meta.get("null_columns", []), meta.get("absent_chunks", {})
    if not isinstance(nulls, list) or not all(isinstance(name, str) for name in nulls):
        return f"null_columns is {json.dumps(nulls)[:40]}, expected a list of column names"
    if not isinstance(absent, dict) or not all(isinstance(keys, list) and all(isinstance(k, str) for k in keys) for keys in absent.values()):
        return f"absent_chunks is {json.dumps(absent)[:40]}, expected {{array: [chunk key, ...]}}"
    docs = meta.get("docs_files", {"size": [], "mtime_ns": []})
    if not isinstance(docs, dict) or sorted(docs) != ["mtime_ns", "size"] or \
            not all(isinstance(v, list) and all(type(x) is int for x in v) for v in docs.values()):
        return f"docs_files is {json.dumps(docs)[:40]}, expected {{\"size\": [integer, ...], \"mtime_ns\": [integer, ...]}}"
    return None


def load_cached_index(root: str | Path, *, split: str | None = None) -> GlobalIndex | None:
    """The cached index of `root`, or None when there is none; raises IndexStaleError when it is stale."""
    root = Path(root)
    path = cache_path(root, split)
    if not path.is_file():
        return None
    rebuild = f"sdl index {root}" + (f" --split {split}" if split else "")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise IndexStaleError(f"{path}: corrupt index cache; run `{rebuild}` to rebuild it") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
        return None  # written by another sdl version: a cache, not data; rebuilt from headers
    if _written_before(data):
        return None
    try:
        index = GlobalIndex.from_dict(data, root)
        problem = _meta_problem(index.meta)
    except FormatError as exc:  # a kind sdl does not know, a negative length
        problem = str(exc)
    except OverflowError as exc:
        problem = f"a number too large for int64 ({exc})"
    if problem:
        raise IndexStaleError(f"{path}: malformed index cache ({problem}); run `{rebuild}` to rebuild it")
    changed = _what_changed(index, data)
    if changed:
        raise IndexStaleError(f"{root}: the cached index no longer matches the files ({changed}); run `{rebuild}` to rebuild it")
    return index


def open_index(root: str | Path, kind: str | None = None, *, split: str | None = None) -> GlobalIndex:
    """Open the index of `root`: from the cache when valid (instant), built from headers when absent.

    A stale cache is never used: IndexStaleError tells the user to run `sdl index`; where its folder cannot be written
    (so `sdl index` could not replace it), the index is built from headers instead, with a warning saying so. An
    `s3://` dataset is indexed from its manifest (tokens, one request) or one listing (zarr, Arrow).
    """
    if is_remote(root):
        return _open_remote(str(root), kind, split)
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory; expected a token dataset, zarr arrays or Arrow files")
    return with_descriptors(lambda: _open_local(root, kind, split), f"indexing {root}", "its files are read one at a time",
                            "close datasets or files this process holds, or raise the limit (ulimit -n)")


def _open_local(root: Path, kind: str | None, split: str | None) -> GlobalIndex:
    try:
        cached = load_cached_index(root, split=split)
    except IndexStaleError as exc:
        folder = cache_path(root, split).parent
        if os.access(folder, os.W_OK):
            raise  # `sdl index` can rebuild it
        # `sdl index` could not replace it either: open as a folder without a cache does, rebuilding in memory
        reason = str(exc).split("; run `sdl index", 1)[0]  # every IndexStaleError ends with that advice
        warnings.warn(f"{reason}, and {folder} cannot be written (a read-only folder), so the index is rebuilt from the "
                      f"files at every open of the dataset: to open it from its cache again, make the folder writable and "
                      f"run `sdl index {root}" + (f" --split {split}`" if split else "`"))
        return build_index(root, kind=kind, split=split, write_cache=False)
    if cached is not None and (kind is None or cached.kind == kind):
        return cached
    return build_index(root, kind=kind, split=split)


def _open_remote(url: str, kind: str | None, split: str | None) -> GlobalIndex:
    """A dataset in an object store: a token dataset from its manifest, zarr or Arrow from one listing (nothing is
    written to the store; see `sdl.loader.index.remote`)."""
    from sdl.loader.index.remote import open_remote_dataset
    from sdl.loader.storage.remote import RemoteFiles

    return open_remote_dataset(RemoteFiles(url), kind, split).index
