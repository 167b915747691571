"""Token dataset sources: one source per shard, listed from the manifest and the `.npy` headers (no token data read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import FormatError
from sdl.loader.format.tokens import MANIFEST_NAME, Manifest, read_manifest, read_npy_header, repair_hint
from sdl.loader.index.table import SourceInfo


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
                f"the file was replaced or truncated; {repair_hint(path)}"
            )
        if dtype != np.dtype(manifest.dtype):
            raise FormatError(f"{shard.file} has dtype {dtype}, manifest says {manifest.dtype}; {repair_hint(path)}")
        stat = path.stat()
        size = stat.st_size
        if size < offset + shard.num_tokens * dtype.itemsize:
            raise FormatError(
                f"{shard.file} is {size:,} bytes, its header needs {offset + shard.num_tokens * dtype.itemsize:,}: "
                f"the file was truncated; {repair_hint(path)}"
            )
        sources.append(SourceInfo(path=shard.file, length=shard.num_tokens, size=size, mtime_ns=stat.st_mtime_ns,
                                  checksum=shard.checksum, inode=stat.st_ino))
    return tuple(sources), token_meta(manifest, descriptor_of(root / MANIFEST_NAME)) | docs_files_of(root, manifest)


def docs_files_of(root: Path, manifest: Manifest) -> dict[str, Any]:
    """{"docs_files": {"size": [...], "mtime_ns": [...]}}: each shard's `.docs.npy` as found (-1: none), for readers of
    document starts to check it against when they open it (`sdl.loader.data.documents`); {} when no shard lists one.
    Not in the fingerprint: checking the cache would cost a stat more per shard for readers that never use them."""
    if not any(shard.docs_file for shard in manifest.shards):
        return {}
    sizes, mtimes = [], []
    for shard in manifest.shards:
        try:
            stat = (root / shard.docs_file).stat() if shard.docs_file else None
        except FileNotFoundError:
            stat = None
        sizes.append(-1 if stat is None else stat.st_size)
        mtimes.append(-1 if stat is None else stat.st_mtime_ns)
    return {"docs_files": {"size": sizes, "mtime_ns": mtimes}}


def token_meta(manifest: Manifest, descriptor: dict[str, Any]) -> dict[str, Any]:
    """The index meta of a token dataset: what the manifest says of its tokens, and its descriptor (for staleness).
    The same for a local copy and one in an object store, so both have the same identity."""
    meta = {
        "dtype": manifest.dtype, "tokenizer": manifest.tokenizer, "vocab_size": manifest.vocab_size,
        "num_docs": manifest.num_docs, "tokens_per_shard": manifest.tokens_per_shard, "descriptor": descriptor,
    }
    if manifest.parts:
        meta["parts"] = list(manifest.parts)
    return meta
