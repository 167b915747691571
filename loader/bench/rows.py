"""`sdl bench --arrow`: ArrowRows against HuggingFace `datasets` on the same rows, memory against file size, and a
shuffle over many files against the sequential order.

- **row access**: the same random batches of row ids read by `ArrowRows.__getitems__` and by
  `datasets.load_from_disk(...)[ids]`, on one `save_to_disk` folder; ms per batch each, and the ratio.
- **memory**: the process's private memory (RssAnon) growth over the first batches of ArrowRows on a small
  and a 10× larger file: flat when only the requested rows are copied (pages of the memory-mapped file are
  page cache, reclaimable, and not counted).
- **many files**: `make_loader(ArrowRows(folder of N files))` with the default shuffle against
  `shuffle=False`: batches/s, and the ratio.
Synthetic data: rows of `text` (a few hundred bytes) and `n` (int64).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_rows(folder: Path, num_rows: int, num_files: int, text_bytes: int = 400) -> Path:
    """A save_to_disk folder of `num_rows` rows in `num_files` Arrow files."""
    import datasets

    words = ("alpha", "beta", "gamma", "delta", "epsilon")

    def rows():
        for i in range(num_rows):
            yield {"n": i, "text": (" ".join(words[(i + k) % 5] for k in range(text_bytes // 6)))[:text_bytes]}

    dataset = datasets.Dataset.from_generator(rows)
    dataset.save_to_disk(str(folder), num_shards=num_files)
    return folder


def _anon_rss_mb() -> float:
    """Private memory in use (RssAnon): copies count, pages of the memory-mapped files (reclaimable cache) do not."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def row_access(folder: Path, batch_size: int, batches: int, seed: int = 0) -> dict[str, float]:
    """ms per batch of ArrowRows and of HF datasets on the same random row ids (median of the batches)."""
    import datasets
    from sdl.loader.data.arrow_rows import ArrowRows

    rows, hf = ArrowRows(folder), datasets.load_from_disk(str(folder))
    ids = np.random.default_rng(seed).integers(0, len(rows), size=(batches, batch_size)).tolist()
    timings = {}
    for name, read in (("sdl_ms", rows.__getitems__), ("hf_ms", hf.__getitem__)):
        read(ids[0])  # open the files
        seconds = []
        for batch in ids:
            started = time.perf_counter()
            read(batch)
            seconds.append(time.perf_counter() - started)
        timings[name] = float(np.median(seconds) * 1e3)
    timings["sdl_vs_hf"] = timings["sdl_ms"] / timings["hf_ms"]
    return timings


def memory_growth(folder: Path, batch_size: int, batches: int) -> float:
    """Private memory growth (MB) over `batches` random batches of ArrowRows on `folder` (opening included)."""
    from sdl.loader.data.arrow_rows import ArrowRows

    gc.collect()
    before = _anon_rss_mb()
    rows = ArrowRows(folder)
    for batch in np.random.default_rng(1).integers(0, len(rows), size=(batches, batch_size)).tolist():
        rows.__getitems__(batch)
    return _anon_rss_mb() - before


def shuffle_vs_sequential(folder: Path, batch_size: int, batches: int, warmup: int, max_open: int | None = None) -> dict[str, float]:
    """Batches/s of the default shuffle and of the sequential order over the files of `folder` (in process), after
    `warmup` batches (opening each file once is start-up, not throughput)."""
    from sdl.loader.data.arrow_rows import ArrowRows
    from sdl.loader.runtime.loader import make_loader

    rates = {}
    for name, shuffle in (("shuffled_batches_per_s", True), ("sequential_batches_per_s", False)):
        rows = ArrowRows(folder) if max_open is None else ArrowRows(folder, max_open=max_open)
        loader = iter(make_loader(rows, batch_size, shuffle=shuffle, num_workers=0, device="cpu"))
        for _ in range(warmup):
            next(loader)
        started = time.perf_counter()
        for _ in range(batches):
            next(loader)
        rates[name] = batches / (time.perf_counter() - started)
    rates["shuffled_vs_sequential"] = rates["shuffled_batches_per_s"] / rates["sequential_batches_per_s"]
    return rates


def run_arrow_bench(folder: Path, batch_size: int = 32, batches: int = 200, file_mb: int = 100,
                    many_files: int = 160) -> dict[str, Any]:
    """The three measurements on synthetic folders written under `folder` (see the module docstring)."""
    row_bytes = 420
    big = write_rows(folder / "big", file_mb * 10**6 // row_bytes, 1)
    small = write_rows(folder / "small", file_mb * 10**5 // row_bytes, 1)
    many = write_rows(folder / "many", many_files * 2_000, many_files)
    access = row_access(big, batch_size, batches)
    return {
        "row_access": {"file_mb": file_mb, "batch_size": batch_size, **access},
        "memory": {"small_file_mb": file_mb / 10, "small_anon_growth_mb": memory_growth(small, batch_size, batches),
                   "big_file_mb": file_mb, "big_anon_growth_mb": memory_growth(big, batch_size, batches)},
        "many_files": {"files": many_files, "default": shuffle_vs_sequential(many, batch_size, batches, many_files),
                       "max_open_64": shuffle_vs_sequential(many, batch_size, batches, many_files, max_open=64)},
    }
