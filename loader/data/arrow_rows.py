"""`ArrowRows`: the rows of Arrow files (a `save_to_disk` folder, `.arrow` files, or a dataset in the local HF cache).

A batch (`__getitems__`) is `{"sample_ids": int64 [B], column: …}` for the selected `columns`:
numeric and boolean columns as tensors [B], any other column as a list of B Python values. A numeric
column that holds a null anywhere in the dataset (the index records which do) is a list in every batch,
with `None` for its nulls, so that a column's type never changes from one batch to the next. An optional
`transform(batch) -> batch` is applied lazily to every batch, as `datasets.Dataset.map(batched=True)`
would, but without writing anything. Files open lazily per process (LRU of `max_open`).

How rows are read: each file is memory-mapped once and kept as its record batches with their row
offsets; a row is a zero-copy one-row slice of its record batch (found by binary search), and a
batch of rows is one table over those slices, in request order — only the requested rows are
ever copied, so a batch costs the same in a 100 MB file as in a 4 GB one and memory does not grow
with the file (what `datasets` does in `fast_gather`). `Table.take` was used before and lost: on a
chunked column it concatenates the whole column first (10 ms for 32 rows of a 100 MB file, +230 MB
for the first batch of a 212 MB one).

A damaged file is a FormatError naming it, never a read past the memory map: each record batch is checked once per
process, when a row of it is first read (`sdl.loader.index.arrow_check`: buffer sizes and every offset, not the
data; ~13 µs per 1,000-row batch), and a string that is not UTF-8 names its file and row.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sdl.loader.data.remote_samples import RemoteSamples
from sdl.loader.data.samples import IndexedSamples
from sdl.loader.errors import FormatError, InputError
from sdl.loader.index import open_index
from sdl.loader.index.arrow_check import VALIDATE_HINT, check_record_batch
from sdl.loader.storage import DEFAULT_PREFETCH_STEPS, is_remote

MAX_OPEN = 1024  # memory maps cost a file descriptor each, not memory: keep every file of a large dataset open


class ArrowRows(RemoteSamples, IndexedSamples):
    """`path` may be `s3://bucket/prefix` (a save_to_disk folder or Arrow files uploaded as they are): each file is
    then fetched whole into the node cache `cache_dir` (at most `cache_limit` bytes; see TokenWindows) and
    memory-mapped from there, and `make_loader` prefetches the files of the next `prefetch_steps` steps."""

    kind = "arrow"
    sized_sources = True

    def __init__(self, path: str | Path | None = None, *, hf: str | None = None, split: str | None = None,
                 columns: Sequence[str] | None = None, transform: Callable[[dict], dict] | None = None,
                 max_open: int = MAX_OPEN, hf_cache: str | Path | None = None, hf_config: str | None = None,
                 cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 prefetch_steps: int = DEFAULT_PREFETCH_STEPS, storage_timeout_s: float | None = None) -> None:
        if (path is None) == (hf is None):
            raise InputError("ArrowRows needs exactly one of path= (a folder of Arrow files) or hf= (a dataset in the local HF cache)")
        if hf is not None:
            from sdl.loader.index.hf_cache import find_hf_dataset

            path = find_hf_dataset(hf, cache_dir=hf_cache, config=hf_config)
        self.hf, self.split = hf, split
        if is_remote(path):
            self.path = str(path)
            self.index = self.open_remote(self.path, split, cache_dir, cache_limit, prefetch_steps, storage_timeout_s)
        else:
            self.path = Path(path)
            self.index = open_index(self.path, kind="arrow", split=split)
        self.columns = self.select(columns, list(self.index.meta["schema"]), "column", self.path)
        self.transform, self.max_open = transform, max_open
        self._lists = set(self.index.meta["null_columns"]) & set(self.columns)  # as lists in every batch

    @property
    def selection(self) -> tuple[str, ...]:
        return self.columns

    def describe(self) -> dict[str, Any]:
        schema = self.index.meta["schema"]
        return {"kind": "arrow", "path": str(self.path), "hf": self.hf, "split": self.index.meta.get("split"),
                "num_samples": len(self), "num_sources": len(self.index.sources),
                "columns": {c: schema[c] for c in self.columns}, "identity": self.identity}

    def open_source(self, source_id: int) -> tuple[list[Any], list[int], list[bool]]:
        """The file's record batches (zero-copy, memory-mapped), the first row of each, and whether each was checked;
        a file whose rows or selected columns are not those the index recorded is a FormatError naming it (the file
        was replaced since: its batches would be misaligned with their sample ids, or another file's rows)."""
        table = self._table(source_id)
        schema, expected = self.index.meta["schema"], int(self.index.sources.lengths[source_id])
        found = {f.name: storage_type_name(f.type) for f in table.schema if f.name in self.columns}
        if table.num_rows != expected or found != {c: found.get(c) if schema[c].startswith("extension<") else schema[c]
                                                   for c in self.columns}:
            what = (f"{expected:,} rows", f"{table.num_rows:,}") if table.num_rows != expected else \
                (f"columns {dict(sorted((c, schema[c]) for c in self.columns))}", f"{dict(sorted(found.items()))}")
            rebuild = f"sdl index {self.path}" + (f" --split {self.split}" if self.split else "")
            raise FormatError(f"{self.where(source_id)}: expected {what[0]} (the index), found {what[1]}: the file changed "
                              f"since the index was built; run `{rebuild}` to rebuild it")
        batches = [b for b in table.select(list(self.columns)).to_batches() if len(b)]
        starts = np.cumsum([0] + [len(b) for b in batches[:-1]]).tolist()
        return batches, starts, [False] * len(batches)

    def _check(self, source_id: int, chunk: int) -> None:
        """Check record batch `chunk` of file `source_id` on its first use in this process (`check_record_batch`: its
        offsets stay inside it), so that a damaged one is a FormatError, not a read past the memory map (SIGBUS)."""
        batches, starts, checked = self.source(source_id)
        check_record_batch(batches[chunk], self.where(source_id), chunk, starts[chunk], self.path)
        checked[chunk] = True

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        import pyarrow as pa

        sample_ids = np.asarray(list(indices), dtype=np.int64)
        source_ids, offsets = self.index.locate(sample_ids)
        rows = []
        for source_id, offset in zip(source_ids.tolist(), offsets.tolist()):
            batches, starts, checked = self.source(source_id)
            chunk = bisect.bisect_right(starts, offset) - 1
            if not checked[chunk]:
                self._check(source_id, chunk)
            rows.append(batches[chunk].slice(offset - starts[chunk], 1))
        table = pa.Table.from_batches(rows, schema=rows[0].schema if rows else self._schema())
        try:
            columns = {c: self._column(table.column(c), c) for c in self.columns}
        except ValueError:  # bytes damaged inside a record batch (text not UTF-8, an Array2D of the wrong shape): name them
            raise self._bad_row(source_ids.tolist(), offsets.tolist()) from None
        return self.finish({"sample_ids": torch.from_numpy(sample_ids), **columns})

    def _bad_row(self, source_ids: list[int], offsets: list[int]) -> FormatError:
        """The FormatError naming the first row of the batch that does not convert to Python values."""
        hint = VALIDATE_HINT.format(root=self.path)
        for source_id, offset in zip(source_ids, offsets):
            batches, starts, _ = self.source(source_id)
            chunk = bisect.bisect_right(starts, offset) - 1
            row = batches[chunk].slice(offset - starts[chunk], 1)
            for name, column in zip(row.schema.names, row.columns):
                try:
                    column.to_pylist()
                except UnicodeDecodeError as exc:
                    return FormatError(f"{self.where(source_id)}: row {offset:,} of the file, column {name!r}: expected UTF-8 "
                                       f"text, found bytes that are not ({exc.reason} at byte {exc.start:,}): the file is damaged; {hint}")
                except ValueError as exc:
                    return FormatError(f"{self.where(source_id)}: row {offset:,} of the file, column {name!r}: expected a value of "
                                       f"type {column.type}, found one that does not convert ({exc}): the file is damaged; {hint}")
        return FormatError(f"{self.path}: expected values that convert, found a row that does not; {hint}")

    def _column(self, column: Any, name: str) -> Any:
        """A numeric or boolean column of a batch as a tensor, unless the dataset holds a null in it; else a list."""
        import pyarrow as pa

        kind = column.type
        if name in self._lists or not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            return column.to_pylist()
        if column.null_count:  # the index said none: the file changed under it
            raise FormatError(f"{self.path}: column {name!r} holds a null that the index of the dataset does not record; "
                              f"the files changed since it was built: run `sdl index {self.path}`")
        return torch.from_numpy(np.array(column.to_numpy(), copy=True))  # Arrow buffers are read-only

    def _schema(self) -> Any:
        return self._table(0).select(list(self.columns)).schema

    def _table(self, source_id: int) -> Any:
        """File `source_id` as a memory-mapped Table: the local file, or its copy in the node cache."""
        from sdl.loader.index.arrow import open_arrow_table

        if self.remote is None:
            return open_arrow_table(self.index.path_of(source_id))
        return self.remote.cache.open(self.object_entry(self.index.sources.paths[source_id]), open_arrow_table)


def storage_type_name(arrow_type: Any) -> str:
    """An Arrow column type as the index records it without extension types: an extension type (e.g. `datasets`'
    Array2D, which is one only in a process that imported `datasets`) by its storage type. A type the index recorded
    as an extension (indexed with it imported) is not compared: its storage type cannot be told from the name."""
    return str(getattr(arrow_type, "storage_type", arrow_type))
