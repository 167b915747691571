"""`ArrowRows`: the rows of Arrow files (a `save_to_disk` folder, `.arrow` files, or a dataset in the local HF cache).

A batch (`__getitems__`) is `{"sample_ids": int64 [B], column: …}` for the selected `columns`:
numeric and boolean columns as tensors [B], any other column as a list of B Python values. The
batch is grouped by file and each file is read once (`Table.take`) from its memory map. An optional
`transform(batch) -> batch` is applied lazily to every batch, as `datasets.Dataset.map(batched=True)`
would, but without writing anything. Files open lazily per process (LRU of `max_open`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sdl.loader.data.samples import IndexedSamples
from sdl.loader.errors import InputError
from sdl.loader.index import group_by_source, open_index


class ArrowRows(IndexedSamples):
    kind = "arrow"

    def __init__(self, path: str | Path | None = None, *, hf: str | None = None, split: str | None = None,
                 columns: Sequence[str] | None = None, transform: Callable[[dict], dict] | None = None,
                 max_open: int = 64, hf_cache: str | Path | None = None, hf_config: str | None = None) -> None:
        if (path is None) == (hf is None):
            raise InputError("ArrowRows needs exactly one of path= (a folder of Arrow files) or hf= (a dataset in the local HF cache)")
        if hf is not None:
            from sdl.loader.index.hf_cache import find_hf_dataset

            path = find_hf_dataset(hf, cache_dir=hf_cache, config=hf_config)
        self.path, self.hf, self.split = Path(path), hf, split
        self.index = open_index(self.path, kind="arrow", split=split)
        self.columns = self.select(columns, list(self.index.meta["schema"]), "column", self.path)
        self.transform, self.max_open = transform, max_open

    @property
    def selection(self) -> tuple[str, ...]:
        return self.columns

    def describe(self) -> dict[str, Any]:
        schema = self.index.meta["schema"]
        return {"kind": "arrow", "path": str(self.path), "hf": self.hf, "split": self.index.meta.get("split"),
                "num_samples": len(self), "num_sources": len(self.index.sources),
                "columns": {c: schema[c] for c in self.columns}, "identity": self.identity}

    def open_source(self, source_id: int) -> Any:
        from sdl.loader.index.arrow import open_arrow_table

        return open_arrow_table(self.index.path_of(source_id)).select(list(self.columns))

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        import pyarrow as pa

        sample_ids = np.asarray(list(indices), dtype=np.int64)
        source_ids, offsets = self.index.locate(sample_ids)
        pieces, order = [], []
        for source_id, positions in group_by_source(source_ids):
            pieces.append(self.source(source_id).take(pa.array(offsets[positions])))
            order.append(positions)
        if pieces:
            table = pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
        else:
            table = self._empty_table()
        batch = {"sample_ids": torch.from_numpy(sample_ids), **{c: _column(table.column(c)) for c in self.columns}}
        return self.finish(batch)

    def _empty_table(self) -> Any:
        return self.source(0).slice(0, 0) if len(self.index.sources) else None


def _column(column: Any) -> Any:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        if column.null_count == 0:
            return torch.from_numpy(np.array(column.to_numpy(), copy=True))  # Arrow buffers are read-only
    return column.to_pylist()
