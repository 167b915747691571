"""The readers sdl's loader is measured against: what a plain PyTorch user writes, and a numpy gather ceiling.

- **baseline**: a map-style Dataset over `np.memmap` returning one window per `__getitem__`, in
  `DataLoader(shuffle=True, batch_size=B, num_workers=…)` with default collate;
- **numpy gather** (ceiling): the windows of the same sample ids fancy-indexed out of a single
  memory-mapped shard into a preallocated array, nothing else.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import torch
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


class GatherCeiling:
    """The ceiling: fancy-index gather of `[B, seq_len + 1]` windows from one memory-mapped shard into a reused array.

    It reads the largest shard; a window start beyond it wraps round (start mod the shard's last start), so on a
    one-shard dataset (the synthetic default) these are exactly the windows sdl reads."""

    def __init__(self, dataset: TokenWindows, batch_size: int) -> None:
        lengths = np.diff(dataset.index.offsets)
        largest = int(np.argmax(lengths))
        self.tokens = open_shard(dataset.index.path_of(largest), expected_tokens=int(lengths[largest])).view(np.ndarray)
        self.span, self.stride = dataset.seq_len + 1, dataset.stride
        self.last_start = max(1, len(self.tokens) - self.span + 1)
        self.columns = np.arange(self.span, dtype=np.int64)
        self.out = np.empty((batch_size, self.span), dtype=self.tokens.dtype)

    def gather(self, sample_ids: np.ndarray) -> np.ndarray:
        starts = (sample_ids * self.stride) % self.last_start
        np.take(self.tokens, starts[:, None] + self.columns, out=self.out, mode="clip")
        return self.out
