"""Building a GlobalIndex (headers only) and its cache file `<dataset>/.sdl/index.json`: write, open, detect staleness.

The cache's layout and what its fingerprint covers are specified in `sdl.loader.index`; this module
lists the sources of each kind (token datasets here, zarr and Arrow in `sdl.loader.catalog`), writes
the cache atomically, and refuses a cache that no longer matches the files on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sdl.loader.atomic import atomic_write_json
from sdl.loader.errors import FormatError, IndexStaleError, InputError
from sdl.loader.format import CACHE_DIR, MANIFEST_NAME, read_manifest, read_npy_header
from sdl.loader.index import INDEX_FILE, INDEX_FORMAT, INDEX_VERSION, KINDS, GlobalIndex, SourceInfo, SourceTable, source_fingerprint


def file_stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def descriptor_of(path: Path) -> dict[str, Any]:
    """Size and mtime of a dataset's descriptor file (manifest), so an edited manifest makes the cache stale."""
    size, mtime_ns = file_stat(path)
    return {"file": path.name, "size": size, "mtime_ns": mtime_ns}


def list_token_sources(root: Path) -> tuple[tuple[SourceInfo, ...], dict[str, Any]]:
    """The shards of a token dataset, from the manifest and the `.npy` headers; never reads token data."""
    manifest = read_manifest(root)
    sources = []
    for shard in manifest.shards:
        path = root / shard.file
        shape, dtype, offset = read_npy_header(path)
        if len(shape) != 1 or shape[0] != shard.num_tokens:
            raise FormatError(
                f"{shard.file} holds {shape[0] if shape else 0:,} tokens, manifest says {shard.num_tokens:,}: "
                "the file was replaced or truncated; re-run sdl prepare with the same arguments to rewrite it"
            )
        if dtype != np.dtype(manifest.dtype):
            raise FormatError(f"{shard.file} has dtype {dtype}, manifest says {manifest.dtype}; re-run sdl prepare to rewrite it")
        size, mtime_ns = file_stat(path)
        if size < offset + shard.num_tokens * dtype.itemsize:
            raise FormatError(
                f"{shard.file} is {size:,} bytes, its header needs {offset + shard.num_tokens * dtype.itemsize:,}: "
                "the file was truncated; re-run sdl prepare with the same arguments to rewrite it"
            )
        sources.append(SourceInfo(path=shard.file, length=shard.num_tokens, size=size, mtime_ns=mtime_ns, checksum=shard.checksum))
    meta = {
        "dtype": manifest.dtype, "tokenizer": manifest.tokenizer, "vocab_size": manifest.vocab_size,
        "num_docs": manifest.num_docs, "tokens_per_shard": manifest.tokens_per_shard,
        "descriptor": descriptor_of(root / MANIFEST_NAME),
    }
    if manifest.parts:
        meta["parts"] = list(manifest.parts)
    return tuple(sources), meta


# kind -> function(root, **options) -> (sources, meta). zarr and arrow register themselves in sdl.loader.catalog.
LISTERS: dict[str, Callable[..., tuple[tuple[SourceInfo, ...], dict[str, Any]]]] = {"tokens": list_token_sources}


# kind -> function(root, relative path) -> (size, mtime_ns) of a source, as its lister measured it (default: os.stat).
SOURCE_STATS: dict[str, Callable[[str, str], tuple[int, int]]] = {}


def detect_kind(root: Path) -> str:
    """Which kind of dataset `root` holds: a token dataset, zarr arrays, or Arrow files."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory; expected a token dataset, zarr arrays or Arrow files")
    if (root / MANIFEST_NAME).is_file():
        return "tokens"
    from sdl.loader.catalog import detect_other_kind  # zarr/arrow discovery lives with those formats

    return detect_other_kind(root)


def cache_path(root: str | Path, split: str | None = None) -> Path:
    return Path(root) / CACHE_DIR / (INDEX_FILE if split is None else f"index-{split}.json")


def build_index(root: str | Path, kind: str | None = None, write_cache: bool = True, *, split: str | None = None) -> GlobalIndex:
    """List the sources of `root` (headers only), and write the cache unless told not to.

    `split` selects one split of an Arrow dataset (a HuggingFace cache folder or DatasetDict).
    """
    root = Path(root)
    kind = kind or detect_kind(root)
    if kind not in KINDS:
        raise InputError(f"kind {kind!r}, expected one of {', '.join(KINDS)}")
    if kind not in LISTERS:
        from sdl.loader import catalog  # noqa: F401  (registers the zarr and arrow listers)
    if split is not None and kind != "arrow":
        raise InputError(f"a split ({split!r}) selects part of an Arrow dataset; {root} is a {kind} dataset")
    sources, meta = LISTERS[kind](root, **({"split": split} if split is not None else {}))
    index = GlobalIndex(kind=kind, root=str(root), sources=sources, meta=meta)
    if write_cache:
        try:
            atomic_write_json(cache_path(root, split), index.to_dict())
        except OSError:
            pass  # a read-only dataset still opens; it just rebuilds (headers only) next time
    return index


def current_sources(index: GlobalIndex) -> tuple[SourceTable, dict[str, Any] | None]:
    """The indexed sources with their sizes and mtimes as on disk now, and the descriptor's (one stat per source)."""
    root = str(index.root)
    if index.kind not in LISTERS:
        from sdl.loader import catalog  # noqa: F401  (registers the zarr and arrow stat functions)
    descriptor = index.meta.get("descriptor")
    if descriptor is not None:
        path = Path(root) / descriptor["file"]
        descriptor = descriptor_of(path) if path.exists() else None
    sizes = np.empty(len(index.sources), dtype=np.int64)
    mtimes = np.empty(len(index.sources), dtype=np.int64)
    stat_source, stat, prefix = SOURCE_STATS.get(index.kind), os.stat, root + "/"
    rel = ""
    try:  # the hot loop of opening from cache: one stat per source (~3 us each), nothing else
        if stat_source is None:
            for i, rel in enumerate(index.sources.paths):
                result = stat(prefix + rel)
                sizes[i], mtimes[i] = result.st_size, result.st_mtime_ns
        else:
            for i, rel in enumerate(index.sources.paths):
                sizes[i], mtimes[i] = stat_source(root, rel)
    except FileNotFoundError:
        raise IndexStaleError(f"{root}/{rel}: listed in the cached index but missing; run `sdl index {root}` to rebuild the index") from None
    return SourceTable(index.sources.paths, index.sources.lengths, sizes, mtimes, index.sources.checksums), descriptor


def current_fingerprint(index: GlobalIndex) -> str:
    """The fingerprint of the files as they are on disk now (one stat per source, nothing read)."""
    return source_fingerprint(*current_sources(index))


def _what_changed(index: GlobalIndex, data: dict[str, Any]) -> str | None:
    """Why the cache `data` no longer describes the files (naming the first changed file), or None when it does."""
    if index.fingerprint != data.get("fingerprint"):
        return "the cache file was edited"
    current, descriptor = current_sources(index)
    if source_fingerprint(current, descriptor) != index.fingerprint:
        changed = np.flatnonzero((current.sizes != index.sources.sizes) | (current.mtime_ns != index.sources.mtime_ns))
        if len(changed):
            return f"{index.sources.paths[int(changed[0])]} was resized or rewritten"
        return f"{index.meta['descriptor']['file']} was rewritten or removed"
    if index.kind != "tokens" and _folder_changed(index):
        return "a source was added or removed"
    return None


def load_cached_index(root: str | Path, *, split: str | None = None) -> GlobalIndex | None:
    """The cached index of `root`, or None when there is none; raises IndexStaleError when it is stale."""
    root = Path(root)
    path = cache_path(root, split)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IndexStaleError(f"{path}: corrupt index cache; run `sdl index {root}` to rebuild it") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
        return None  # written by another sdl version: a cache, not data; rebuilt from headers
    index = GlobalIndex.from_dict(data, root)
    changed = _what_changed(index, data)
    if changed:
        raise IndexStaleError(f"{root}: the cached index no longer matches the files ({changed}); run `sdl index {root}` to rebuild it")
    return index


def _folder_changed(index: GlobalIndex) -> bool:
    """For zarr and Arrow folders (no manifest lists the files), a source added beside the others."""
    from sdl.loader.catalog import source_set_changed

    return source_set_changed(index)


def open_index(root: str | Path, kind: str | None = None, *, split: str | None = None) -> GlobalIndex:
    """Open the index of `root`: from the cache when valid (instant), built from headers when absent.

    A stale cache is never used: IndexStaleError tells the user to run `sdl index`.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory; expected a token dataset, zarr arrays or Arrow files")
    cached = load_cached_index(root, split=split)
    if cached is not None and (kind is None or cached.kind == kind):
        return cached
    return build_index(root, kind=kind, split=split)
