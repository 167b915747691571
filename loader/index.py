"""The global index: cumulative offsets over a list of sources, so a global position maps to (source, offset).

Sources are token shards (length = tokens), zarr arrays (first-axis items) or Arrow files (rows).
The index is O(number of sources) and is cached as `<dataset>/.sdl/index.json`:

    {"format": "sdl-index", "version": 1, "kind": "tokens", "fingerprint": "...", "identity": "...",
     "meta": {...}, "sources": [{"path": "shard-000000.npy", "length": 100, "size": 328,
                                 "mtime_ns": 1700000000000000000, "checksum": "sha256:..."}]}

`fingerprint` hashes (names, sizes, mtimes, lengths) plus the dataset's own descriptor file: when it
differs from the files on disk the cache is stale, and a reader refuses it (IndexStaleError) rather
than use it; `sdl index` rebuilds it. `identity` hashes what the data *is* (names, lengths,
checksums when known) and survives a copy to another machine: the loader keys its order and its
saved states by it, so a checkpoint moves with its dataset but never onto another one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdl.loader.atomic import atomic_write_json
from sdl.loader.errors import FormatError, IndexStaleError, InputError
from sdl.loader.format import CACHE_DIR, MANIFEST_NAME, read_manifest, read_npy_header

INDEX_FORMAT = "sdl-index"
INDEX_VERSION = 1
INDEX_FILE = "index.json"
KINDS = ("tokens", "zarr", "arrow")


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceInfo:
    path: str
    length: int
    size: int
    mtime_ns: int
    checksum: str | None = None

    def __post_init__(self) -> None:
        if self.length < 0:
            raise FormatError(f"source {self.path}: length {self.length} < 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class GlobalIndex:
    kind: str
    root: str
    sources: tuple[SourceInfo, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    offsets: np.ndarray = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False)
    identity: str = field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FormatError(f"index kind {self.kind!r}, expected one of {', '.join(KINDS)}")
        lengths = np.fromiter((s.length for s in self.sources), dtype=np.int64, count=len(self.sources))
        offsets = np.zeros(len(self.sources) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        offsets.setflags(write=False)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "fingerprint", source_fingerprint(self.sources, self.meta.get("descriptor")))
        object.__setattr__(self, "identity", source_identity(self.kind, self.sources, self.meta))

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def locate(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """(source_ids, offsets) of global positions, vectorised: one binary search over all of them."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.total):
            bad = positions[(positions < 0) | (positions >= self.total)][0]
            raise IndexError(f"global position {int(bad)} is outside [0, {self.total})")
        source_ids = np.searchsorted(self.offsets, positions, side="right") - 1
        return source_ids, positions - self.offsets[source_ids]

    def path_of(self, source_id: int) -> Path:
        return Path(self.root) / self.sources[source_id].path

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": self.kind,
            "fingerprint": self.fingerprint, "identity": self.identity, "meta": self.meta,
            "sources": [{"path": s.path, "length": s.length, "size": s.size, "mtime_ns": s.mtime_ns, "checksum": s.checksum}
                        for s in self.sources],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], root: str | Path) -> GlobalIndex:
        if data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
            raise FormatError(
                f"{root}/{CACHE_DIR}/{INDEX_FILE}: format {data.get('format')!r} version {data.get('version')!r}, "
                f"expected {INDEX_FORMAT!r} version {INDEX_VERSION}; run `sdl index {root}` to rebuild it"
            )
        sources = tuple(SourceInfo(**s) for s in data["sources"])
        return cls(kind=data["kind"], root=str(root), sources=sources, meta=data.get("meta", {}))


def _hash(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def source_fingerprint(sources: tuple[SourceInfo, ...], descriptor: dict[str, Any] | None = None) -> str:
    return _hash([descriptor, [(s.path, s.size, s.mtime_ns, s.length) for s in sources]])


def source_identity(kind: str, sources: tuple[SourceInfo, ...], meta: dict[str, Any]) -> str:
    content_meta = {k: v for k, v in meta.items() if k != "descriptor"}
    return _hash([kind, content_meta, [(Path(s.path).name, s.length, s.checksum) for s in sources]])


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
        shape, dtype, _ = read_npy_header(path)
        if len(shape) != 1 or shape[0] != shard.num_tokens:
            raise FormatError(
                f"{shard.file} holds {shape[0] if shape else 0:,} tokens, manifest says {shard.num_tokens:,}: "
                "the file was replaced or truncated; re-run sdl prepare with the same arguments to rewrite it"
            )
        if dtype != np.dtype(manifest.dtype):
            raise FormatError(f"{shard.file} has dtype {dtype}, manifest says {manifest.dtype}; re-run sdl prepare to rewrite it")
        size, mtime_ns = file_stat(path)
        sources.append(SourceInfo(path=shard.file, length=shard.num_tokens, size=size, mtime_ns=mtime_ns, checksum=shard.checksum))
    meta = {
        "dtype": manifest.dtype, "tokenizer": manifest.tokenizer, "vocab_size": manifest.vocab_size,
        "num_docs": manifest.num_docs, "tokens_per_shard": manifest.tokens_per_shard,
        "descriptor": descriptor_of(root / MANIFEST_NAME),
    }
    return tuple(sources), meta


# kind -> function(root) -> (sources, meta). zarr and arrow register themselves in their modules.
LISTERS: dict[str, Callable[[Path], tuple[tuple[SourceInfo, ...], dict[str, Any]]]] = {"tokens": list_token_sources}


def detect_kind(root: Path) -> str:
    """Which kind of dataset `root` holds: a token dataset, zarr arrays, or Arrow files."""
    if not root.exists():
        raise InputError(f"{root}: no such file or directory; expected a token dataset, zarr arrays or Arrow files")
    if (root / MANIFEST_NAME).is_file():
        return "tokens"
    from sdl.loader.catalog import detect_other_kind  # zarr/arrow discovery lives with those formats

    return detect_other_kind(root)


def cache_path(root: str | Path) -> Path:
    return Path(root) / CACHE_DIR / INDEX_FILE


def build_index(root: str | Path, kind: str | None = None, write_cache: bool = True) -> GlobalIndex:
    """List the sources of `root` (headers only), and write the cache unless told not to."""
    root = Path(root)
    kind = kind or detect_kind(root)
    if kind not in LISTERS:
        from sdl.loader import catalog  # noqa: F401  (registers the zarr and arrow listers)
    sources, meta = LISTERS[kind](root)
    index = GlobalIndex(kind=kind, root=str(root), sources=sources, meta=meta)
    if write_cache:
        try:
            atomic_write_json(cache_path(root), index.to_dict())
        except OSError:
            pass  # a read-only dataset still opens; it just rebuilds (headers only) next time
    return index


def current_fingerprint(index: GlobalIndex) -> str:
    """The fingerprint of the files as they are on disk now (stat only)."""
    root = Path(index.root)
    descriptor = index.meta.get("descriptor")
    if descriptor is not None:
        descriptor = descriptor_of(root / descriptor["file"]) if (root / descriptor["file"]).exists() else None
    sources = []
    for s in index.sources:
        path = root / s.path
        if not os.path.exists(path):
            raise IndexStaleError(f"{path}: listed in the cached index but missing; run `sdl index {root}` to rebuild the index")
        size, mtime_ns = file_stat(path)
        sources.append(SourceInfo(path=s.path, length=s.length, size=size, mtime_ns=mtime_ns, checksum=s.checksum))
    return source_fingerprint(tuple(sources), descriptor)


def load_cached_index(root: str | Path) -> GlobalIndex | None:
    """The cached index of `root`, or None when there is none; raises IndexStaleError when it is stale."""
    root = Path(root)
    path = cache_path(root)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IndexStaleError(f"{path}: corrupt index cache; run `sdl index {root}` to rebuild it") from None
    index = GlobalIndex.from_dict(data, root)
    if index.fingerprint != data.get("fingerprint") or current_fingerprint(index) != index.fingerprint:
        raise IndexStaleError(
            f"{root}: the cached index no longer matches the files (a file was added, removed, resized or rewritten); "
            f"run `sdl index {root}` to rebuild it"
        )
    return index


def open_index(root: str | Path, kind: str | None = None) -> GlobalIndex:
    """Open the index of `root`: from the cache when valid (instant), built from headers when absent.

    A stale cache is never used: IndexStaleError tells the user to run `sdl index`.
    """
    root = Path(root)
    cached = load_cached_index(root)
    if cached is not None and (kind is None or cached.kind == kind):
        return cached
    return build_index(root, kind=kind)
