"""The readers sdl's loader is measured against: what a plain PyTorch user writes, an honest ceiling, and memcpy.

- **baseline**: a map-style Dataset over `np.memmap` returning one window per `__getitem__`, in
  `DataLoader(shuffle=True, batch_size=B, num_workers=…)` with default collate;
- **ceiling**: the same windows (same sample ids, located outside the timed call) copied into one
  preallocated array of sdl's output layout and dtype ([2, B, seq_len]: inputs, then labels) the fastest
  way measured: a batch inside one shard as one fancy index of a strided window view of the shard, a batch
  across shards as one fancy index of a view over all of them (`sdl.loader.data.span_view`), else one slice
  copy per window, into a [B, L+1] array of the shard's dtype, then two casting copies into the halves. That is sdl's copy (`sdl.loader.data.window_copy`) with nothing around it. Measured (16 × 2048,
  uint32 → int64, same run): per-row casting slices of inputs and labels, the previous ceiling, 38.5 µs a
  batch; per-row window copies + two casts 32.6 µs; one window-view gather + two casts 25.3 µs. (A
  fancy-index `np.take` with a [B, L+1] index array was used first: slower than slices and a quarter of
  sdl's output bytes, so not a ceiling.)
  The **held** ceiling does the same into two preallocated arrays in turn, so that batch k is still intact
  while batch k+1 is made, as a training loop that holds the previous batch needs (the least any loader's
  output must do; one reused array stays in the CPU's L2 cache, two alternating ones partly do not);
  the **per-row** ceiling is issue 14's definition, kept as a reference: the windows' inputs and labels copied
  row by row (two casting slice copies a window) into one preallocated array: what a careful user writes
  by hand, slower than the window-view gather (38.5 against 25.3 µs above), so not the ceiling sdl is held to;
- **memcpy**: the bandwidth of copying a large array into another, the physical limit of any reader.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import torch
from sdl.loader.data.span_view import SpanView
from sdl.loader.data.windows import TokenWindows
from sdl.loader.format.tokens import open_shard
from torch.utils.data import DataLoader, Dataset


class NaiveWindows(Dataset):
    """The baseline: one window per `__getitem__`, sliced out of `np.memmap` shards (opened lazily, per worker)."""

    def __init__(self, shard_paths: list[str], offsets: list[int], seq_len: int, stride: int, num_samples: int) -> None:
        self.shard_paths, self.offsets = shard_paths, offsets
        self.seq_len, self.stride, self.num_samples = seq_len, stride, num_samples
        self.shards: list[np.memmap] | None = None

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, sample_id: int) -> dict[str, Any]:
        if self.shards is None:
            self.shards = [np.load(path, mmap_mode="r") for path in self.shard_paths]
        start = sample_id * self.stride
        shard = bisect.bisect_right(self.offsets, start) - 1
        offset = start - self.offsets[shard]
        window = self.shards[shard][offset:offset + self.seq_len + 1]
        if len(window) < self.seq_len + 1:  # crosses into the next shard(s)
            window = np.concatenate([window] + [s[:self.seq_len + 1] for s in self.shards[shard + 1:]])[:self.seq_len + 1]
        window = window.astype(np.int32)
        return {"input_ids": torch.from_numpy(window[:-1]), "labels": torch.from_numpy(window[1:]), "sample_ids": sample_id}


def naive_windows(dataset: TokenWindows) -> NaiveWindows:
    index = dataset.index
    paths = [str(index.path_of(i)) for i in range(len(index.sources))]
    return NaiveWindows(paths, index.offsets[:-1].tolist(), dataset.seq_len, dataset.stride, len(dataset))


def baseline_loader(dataset: TokenWindows, batch_size: int, seed: int, num_workers: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(naive_windows(dataset), batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      drop_last=True, generator=generator, persistent_workers=num_workers > 0)


class SliceCeiling:
    """The windows of given sample ids copied into a preallocated [2, B, seq_len] array of `dtype`, or into `buffers`
    such arrays in turn (see module docstring).

    Windows are located once (`plan`); a window crossing a shard boundary is read from the end of its first shard
    instead (the same bytes moved, fewer Python steps than sdl's piecewise read: still a ceiling)."""

    def __init__(self, dataset: TokenWindows, batch_size: int, dtype: Any, buffers: int = 1, per_row: bool = False) -> None:
        lengths = np.diff(dataset.index.offsets)
        self.shards = [open_shard(dataset.index.path_of(i), expected_tokens=int(n)).view(np.ndarray) for i, n in enumerate(lengths)]
        self.dataset, self.lengths, self.per_row = dataset, lengths, per_row
        self.seq_len = dataset.seq_len
        span = self.seq_len + 1
        self.views = [np.lib.stride_tricks.as_strided(shard, (len(shard) - span + 1, span), (shard.strides[0],) * 2, writeable=False)
                      if len(shard) >= span else None for shard in self.shards]
        try:  # a batch across shards: one fancy index of a view over them all, as sdl's fastest route
            self.span = SpanView(dict(enumerate(self.shards)), span) if len(self.shards) > 1 else None
        except ValueError:
            self.span = None
        self.outs = [np.empty((2, batch_size, self.seq_len), dtype=dtype) for _ in range(buffers)]
        self.turn = 0  # the array the next batch goes into
        self.windows = np.empty((batch_size, span), dtype=self.shards[0].dtype)

    def plan(self, sample_ids: np.ndarray) -> tuple[Any, Any]:
        """(window view, offsets array) when every window lies in one shard, else (None, [(shard, offset), ...]);
        computed outside the timed loop."""
        starts = (np.asarray(sample_ids, dtype=np.int64) + self.dataset._windows.start) * self.dataset.stride
        sources, offsets = self.dataset.index.locate(starts)
        span = self.seq_len + 1
        rows = [(s, min(o, int(self.lengths[s]) - span)) for s, o in zip(sources.tolist(), offsets.tolist())]
        whole = not self.per_row and min(o for _, o in rows) >= 0  # else a shard shorter than a window: read across
        if len({s for s, _ in rows}) == 1 and whole:
            return self.views[rows[0][0]], np.array([o for _, o in rows], dtype=np.int64)
        if self.span is not None and whole:
            return self.span.view, self.span.rows(sources, np.array([o for _, o in rows], dtype=np.int64))
        return None, [(self.shards[s], o) if o >= 0 else (self.dataset._read_span(int(start), span), 0)
                      for (s, o), start in zip(rows, starts.tolist())]

    def gather(self, planned: tuple[Any, Any]) -> np.ndarray:
        view, rows = planned
        if self.per_row:
            return self._by_rows(rows)
        if view is not None:
            windows = view[rows]
        else:
            windows, span = self.windows, self.seq_len + 1
            for row, (shard, offset) in enumerate(rows):
                windows[row] = shard[offset:offset + span]
        out = self.outs[self.turn]
        self.turn = (self.turn + 1) % len(self.outs)
        out[0] = windows[:, :self.seq_len]
        out[1] = windows[:, 1:]
        return out


    def _by_rows(self, rows: list[tuple[np.ndarray, int]]) -> np.ndarray:
        """The per-row ceiling: each window's inputs and labels cast straight from the shard into the output."""
        out, seq_len = self.outs[self.turn], self.seq_len
        self.turn = (self.turn + 1) % len(self.outs)
        inputs, labels = out[0], out[1]
        for row, (shard, offset) in enumerate(rows):
            inputs[row] = shard[offset:offset + seq_len]
            labels[row] = shard[offset + 1:offset + 1 + seq_len]
        return out


def memcpy_gb_per_s(num_bytes: int = 1 << 26, repeats: int = 5) -> float:
    """Best of `repeats` copies of a `num_bytes` array into another (both touched first): GB/s."""
    import time

    source, target = np.ones(num_bytes, dtype=np.uint8), np.zeros(num_bytes, dtype=np.uint8)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return num_bytes / best / 1e9
