"""`ZarrSamples`: one sample per first-axis item across many zarr stores, read through the global index.

A sample is a dict with one entry per field: `"data"` when the stores are plain arrays, else one entry
per array inside each store's group (`"images"`, `"labels"`, …); see `sdl.loader.index.zarr`. A batch
(`__getitems__`) is `{"sample_ids": int64 [B], field: tensor [B, *item_shape], …}`: the batch is
grouped by store and each store is read once (a contiguous slab when the rows are close, else an
orthogonal selection). Stores are opened lazily per process, at most `max_open` at a time, so the
dataset pickles into DataLoader workers without open handles.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sdl.loader.data.batch import as_tensor
from sdl.loader.data.remote_samples import RemoteSamples
from sdl.loader.data.samples import IndexedSamples
from sdl.loader.errors import FormatError, SdlError
from sdl.loader.index import group_by_source, open_index
from sdl.loader.storage import DEFAULT_PREFETCH_STEPS, is_remote


class ZarrSamples(RemoteSamples, IndexedSamples):
    """`path` may be `s3://bucket/prefix` (zarr stores uploaded as they are): every metadata and chunk object is then
    read through the node cache `cache_dir` (at most `cache_limit` bytes; see TokenWindows), by a zarr store over
    sdl's client (`sdl.loader.storage.zarr_store`), and `make_loader` prefetches the chunks of the next steps."""

    kind = "zarr"

    def __init__(self, path: str | Path, *, transform: Callable[[dict], dict] | None = None, max_open: int = 64,
                 fields: Sequence[str] | None = None, cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 prefetch_steps: int = DEFAULT_PREFETCH_STEPS, storage_timeout_s: float | None = None) -> None:
        if is_remote(path):
            self.path = str(path)
            self.index = self.open_remote(self.path, None, cache_dir, cache_limit, prefetch_steps, storage_timeout_s)
        else:
            self.path = Path(path)
            self.index = open_index(self.path, kind="zarr")
        self.fields = self.select(fields, list(self.index.meta["fields"]), "field", self.path)
        self.transform, self.max_open = transform, max_open

    @property
    def selection(self) -> tuple[str, ...]:
        return self.fields

    def describe(self) -> dict[str, Any]:
        fields = {name: self.index.meta["fields"][name] for name in self.fields}
        return {"kind": "zarr", "path": str(self.path), "num_samples": len(self), "num_sources": len(self.index.sources),
                "fields": fields, "identity": self.identity}

    def open_source(self, source_id: int) -> dict[str, Any]:
        import zarr

        with warnings.catch_warnings():  # our `.sdl/` cache inside a store is "not a zarr component"
            warnings.simplefilter("ignore")
            if self.remote is None:  # a chunk gone since `sdl index` is an error, not fill values (data.zarr_chunks)
                from sdl.loader.data.zarr_chunks import IndexedLocalStore

                store = IndexedLocalStore(self.path, self.index.sources.paths[source_id], list(self.index.meta["fields"]),
                                          self.index.meta.get("absent_chunks") or {})
                node = zarr.open(store=store, mode="r")
            else:
                from sdl.loader.storage.zarr_store import CachedObjectStore

                node = zarr.open(store=CachedObjectStore(self.remote, self.dataset.objects, self.index.sources.paths[source_id]), mode="r")
        arrays = {"data": node} if isinstance(node, zarr.Array) else {name: node[name] for name in self.fields}
        self._check_shapes(source_id, arrays)
        return arrays

    def _check_shapes(self, source_id: int, arrays: dict[str, Any]) -> None:
        """A FormatError when an array's shape is not the one the index recorded: resized since (its items would be
        other items, or a read past its end a decode error that blames the chunks)."""
        length = int(self.index.sources.lengths[source_id])
        for name, array in arrays.items():
            expected = (length, *self.index.meta["fields"][name]["shape"])
            if tuple(array.shape) != expected:
                raise FormatError(f"{self.where(source_id)}: field {name!r}: expected shape {expected} (the index), found "
                                  f"{tuple(array.shape)}: the array was resized since the index was built; run "
                                  f"`sdl index {self.path}` to rebuild it")

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        sample_ids = np.asarray(list(indices), dtype=np.int64)
        source_ids, offsets = self.index.locate(sample_ids)
        meta = self.index.meta["fields"]
        out = {name: np.empty((len(sample_ids), *meta[name]["shape"]), dtype=meta[name]["dtype"]) for name in self.fields}
        for source_id, positions in group_by_source(source_ids):
            rows, inverse = np.unique(offsets[positions], return_inverse=True)
            arrays = self.source(source_id)
            for name in self.fields:
                out[name][positions] = self._read(source_id, name, arrays[name], rows)[inverse]
        batch = {"sample_ids": torch.from_numpy(sample_ids), **{name: as_tensor(a) for name, a in out.items()}}
        return self.finish(batch)


    def _read(self, source_id: int, name: str, array: Any, rows: np.ndarray) -> np.ndarray:
        """`_read_rows`, a decode failure (a corrupt chunk) turned into a FormatError naming the store, field and items."""
        try:
            return _read_rows(array, rows)
        except SdlError:  # the object store's one-line errors (server down, object gone) pass as they are
            raise
        except Exception as exc:  # zarr/numcodecs raise codec-specific types (zstd, blosc, …)
            store = self.where(source_id)
            items = f"items {int(rows[0])}…{int(rows[-1])}" if len(rows) > 1 else f"item {int(rows[0])}"
            raise FormatError(f"{store}: field {name!r}, {items}: a chunk does not decode ({type(exc).__name__}: {exc}); "
                              f"run `sdl index {self.path} --validate` to list every bad chunk, and restore them") from None


def _read_rows(array: Any, rows: np.ndarray) -> np.ndarray:
    """Rows (sorted, unique) of a zarr array: one slab when they are dense enough, else an orthogonal selection."""
    first, last = int(rows[0]), int(rows[-1])
    if last - first + 1 <= 4 * len(rows):
        return np.asarray(array[first:last + 1])[rows - first]
    return np.asarray(array.oindex[rows])


