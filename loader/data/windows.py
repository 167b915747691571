"""TokenWindows: fixed-length token windows over a token dataset, gathered a whole batch at a time.

Sample *i* of a split is the window starting at global token `(split_start + i) * stride`:
`input_ids` are `seq_len` tokens from there, `labels` the same window shifted by `shift`.
Windows run across shard boundaries, so no token of the stream is wasted.

A batch (`__getitems__`) is a dict:

    "input_ids"   [B, L]   int64 (see below); with layout="grouped" [B, L/shift, shift]
    "labels"      [B, L]   the window shifted by `shift`; grouped: the label of chunk k is chunk k+1
    "position_ids" [B, L]  only with doc_starts=True: each input token's position within its document
                           (host dtype and shape of input_ids); see "Document positions" below
    "cu_seqlens"  [S+1]    only with doc_starts=True, int32: the S document segments of the flattened [B·L]
                           batch, from 0 to B·L, cut at row boundaries (for varlen attention)
    "max_seqlen"  int      only with doc_starts=True: the longest of those segments
    "sample_ids"  [B]      int64, sample ids within the split (the indices asked for)
    "shift"       int      only with shift="random": the shift drawn for this batch

One sample (`ds[i]`) has the same keys without the batch dimension (`sample_ids` a 0-d tensor) except `cu_seqlens`/
`max_seqlen`, which describe a whole batch; under shift="random" a single sample uses shift 1.

The batch is a `GatheredBatch` (`sdl.loader.data.batch`), so a plain `DataLoader(ds, batch_size=B)` with
the default collate gives it whole. Token ids are int64, what embeddings and `cross_entropy` take, on every
route. `make_loader` alone gathers them as `wire_dtype` (int32, the narrowest safe signed type for both shard
dtypes: uint16 ids do not fit int16, and torch supports few ops on uint16/uint32; int64 for a vocabulary of
2**31 ids or more) when they go to a GPU, and its device feed widens them after the (half-size) copy; on
the CPU its workers gather int64 straight into their shared-memory ring (`sdl.loader.runtime.transport`).

Document positions (doc_starts=True) are defined in `sdl.loader.data.documents`. Shards: `sdl.loader.data.shard_access`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sdl.loader.data.batch import GatheredBatch, token_halves
from sdl.loader.data.documents import DocStarts, cu_seqlens
from sdl.loader.data.shard_access import ShardAccess, open_shards_limit
from sdl.loader.data.split import SPLITS, count_windows, split_range
from sdl.loader.data.window_copy import copy_rows, copy_windows, locate_windows, one_shard_batch, plan_of, windows_batch
from sdl.loader.errors import ConfigError, InputError
from sdl.loader.index import GlobalIndex, open_index
from sdl.loader.index.remote import open_remote_index
from sdl.loader.storage import DEFAULT_PREFETCH_STEPS, CacheEntry, remote_files

LAYOUTS = ("flat", "grouped")
BATCH_ONLY_KEYS = ("cu_seqlens", "max_seqlen")  # describe a whole batch: not part of one sample


def proper_divisors(n: int) -> list[int]:
    """Every d with 1 <= d < n and d | n, ascending."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted((set(small) | {n // d for d in small}) - {n})


def check_shift(seq_len: int, shift: int | str, layout: str) -> list[int]:
    """The shifts a batch may use: [shift] for a fixed shift, the proper divisors of seq_len for "random"."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout is {layout!r}, expected one of {', '.join(LAYOUTS)}")
    if shift == "random":
        choices = proper_divisors(seq_len)
        if not choices:
            raise ConfigError(f"shift='random' draws from the proper divisors of seq_len, and seq_len={seq_len} has none; use seq_len >= 2")
        return choices
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)):
        raise ConfigError(f"shift is {shift!r}, expected a positive integer dividing seq_len, or 'random'")
    if not 1 <= shift <= seq_len or seq_len % shift:
        raise ConfigError(f"shift is {shift}, expected a divisor of seq_len={seq_len} (1 <= shift <= seq_len), or 'random'; "
                          f"valid shifts: {proper_divisors(seq_len) + [seq_len]}")
    return [int(shift)]


def host_dtype(vocab_size: int, shard_dtype: str = "uint32") -> np.dtype:
    """int32 unless token ids may reach 2**31 (a uint32 dataset of unknown vocabulary size may)."""
    if shard_dtype == "uint16" or 0 < vocab_size <= 2**31:
        return np.dtype(np.int32)
    return np.dtype(np.int64)


class TokenWindows(ShardAccess):
    """Windows of `seq_len` tokens every `stride` tokens over the token dataset at `path` (see module docstring).

    `path` may be `s3://bucket/prefix`: shards are then read through the node cache `cache_dir` (default under
    the user cache dir) of at most `cache_limit` bytes (default: no limit), which `make_loader` fills
    `prefetch_steps` steps ahead; a request fails after `storage_timeout_s` (None: `SDL_STORAGE_TIMEOUT_S`, else 60 s)."""

    def __init__(self, path: str | Path, seq_len: int, stride: int | None = None, shift: int | str = 1,
                 split: str = "all", split_rate: float = 1.0, layout: str = "flat", max_open_shards: int | None = None,
                 doc_starts: bool = False, cache_dir: str | Path | None = None, cache_limit: int | None = None,
                 prefetch_steps: int = DEFAULT_PREFETCH_STEPS, storage_timeout_s: float | None = None) -> None:
        stride = seq_len if stride is None else stride
        checked = {"seq_len": seq_len, "stride": stride} | ({} if max_open_shards is None else {"max_open_shards": max_open_shards})
        for name, value in checked.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(f"{name} is {value!r}, expected a positive integer")
        for name, value, kinds, expected in (("path", path, (str, Path), "a dataset folder or s3://bucket/prefix"),
                                             ("split_rate", split_rate, (int, float), "a fraction in [0, 1]")):
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ConfigError(f"{name} is {value!r} ({type(value).__name__}), expected {expected}")
        self.path = str(path)
        self.seq_len, self.stride, self.shift = int(seq_len), int(stride), shift
        self.split, self.split_rate, self.layout = split, float(split_rate), layout
        self.shift_choices = check_shift(self.seq_len, shift, layout)
        self.remote = remote_files(path, cache_dir, cache_limit, prefetch_steps, storage_timeout_s)
        self._entries: dict[int, CacheEntry] = {}  # remote: each shard's cache entry, made once
        self._heads: OrderedDict[int, np.ndarray] = OrderedDict()  # remote: heads of shards that windows spill into (ShardAccess._head)
        self.index: GlobalIndex = open_remote_index(self.path, self.remote) if self.remote else open_index(path, kind="tokens")
        self.max_open_shards = open_shards_limit(max_open_shards, self.remote, len(self.index.sources))
        self.wire_dtype = host_dtype(int(self.index.meta.get("vocab_size") or 0), self.index.meta.get("dtype", "uint32"))
        self._host_dtype = np.dtype(np.int64)
        # _views: ShardAccess._window_view's; _spanning: the last SpanView and the ChunkPlan using it (window_copy)
        self._shard_dtype, self._views, self._spanning = np.dtype(self.index.meta.get("dtype", "uint32")), None, None
        self._lengths = np.diff(self.index.offsets)
        self._shard_starts, self._shard_lengths = self.index.offsets.tolist(), self._lengths.tolist()  # gather's, per row
        self._windows = self._split_windows()
        self._open = self.open_sources()
        self._doc_starts = DocStarts(self.index, self.max_open_shards, self.remote) if doc_starts else None
        self._lean = len(self.shift_choices) == 1 and shift != "random" and layout == "flat" and not doc_starts  # __getitems__

    def _split_windows(self) -> range:
        max_shift = max(self.shift_choices)
        num_windows = count_windows(self.index.total, self.seq_len, self.stride, max_shift)
        if num_windows == 0:
            raise InputError(f"{self.path} holds {self.index.total:,} tokens, one window needs seq_len + shift = "
                             f"{self.seq_len + max_shift:,}; use a shorter seq_len or a larger dataset")
        if self.split not in SPLITS:
            raise ConfigError(f"split is {self.split!r}, expected one of {', '.join(SPLITS)}")
        windows = split_range(num_windows, self.split, self.split_rate, self.seq_len, self.stride, max_shift)
        if len(windows) == 0:
            raise ConfigError(f"split {self.split!r} with split_rate={self.split_rate} holds none of the {num_windows:,} windows "
                              f"of {self.path}; choose a split_rate that leaves windows on both sides, or split='all'")
        return windows

    # Identity and description
    @property
    def tokens_per_sample(self) -> int:
        return self.seq_len

    @property
    def identity(self) -> str:
        parts = [self.index.identity, self.seq_len, self.stride, self.shift, self.split, self.split_rate, self.layout]
        return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        return {"kind": "tokens", "path": self.path, "seq_len": self.seq_len, "stride": self.stride, "shift": self.shift,
                "split": self.split, "split_rate": self.split_rate, "num_samples": len(self),
                "tokens_per_sample": self.seq_len}

    def __repr__(self) -> str:
        return f"TokenWindows({self.path!r}, seq_len={self.seq_len}, stride={self.stride}, shift={self.shift!r}, " \
               f"split={self.split!r}, num_samples={len(self)})"

    # Access
    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, sample_id: int) -> dict[str, Any]:
        if isinstance(sample_id, bool) or not isinstance(sample_id, (int, np.integer)):
            raise TypeError(f"sample ids are integers, got {sample_id!r} ({type(sample_id).__name__})")
        if not -len(self) <= sample_id < len(self):
            raise IndexError(f"sample {sample_id} is outside [0, {len(self)})")
        sample_id = int(sample_id) % len(self)
        shift = self.shift_choices[0] if self.shift != "random" else 1
        batch = self._batch(np.array([sample_id], dtype=np.int64), shift)
        return {key: value[0] if isinstance(value, torch.Tensor) else value for key, value in batch.items()
                if key not in BATCH_ONLY_KEYS}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        plan, k = self._planned(indices)
        if plan is None:
            return self._batch(self._check_ids(indices), self.batch_shift(indices))
        if self._lean:  # the common cases, with nothing they do not need (~3 µs less)
            if plan.single[k] >= 0:
                return one_shard_batch(self, plan.single[k], plan.offsets[k], plan.take_ids(k))
            if (windows := plan.span_windows(k, plan.max_span)) is not None:
                return windows_batch(self, windows, plan.take_ids(k))
        return self._batch(plan.ids[k], self.batch_shift(indices), step=plan.step(k))

    def _planned(self, indices: list[int]) -> tuple[Any, int]:
        """(the ChunkPlan, step) of a SampleBatch with a StepChunk (from the sampler, or a worker's task: located once
        for all the chunk's steps), or (None, 0) for any other list of ids, or one changed since its chunk was made."""
        chunk = getattr(indices, "chunk", None)
        if chunk is not None:
            plan, k = plan_of(self, chunk), indices.step
            if plan.id_lists[k] == indices:
                return plan, k
        return None, 0

    def _check_ids(self, indices: list[int]) -> np.ndarray:
        sample_ids = np.asarray(indices, dtype=np.int64).reshape(-1)
        if sample_ids.size and (sample_ids.min() < 0 or sample_ids.max() >= len(self)):
            bad = sample_ids[(sample_ids < 0) | (sample_ids >= len(self))][0]
            raise IndexError(f"sample {int(bad)} is outside [0, {len(self)})")
        return sample_ids

    def batch_shift(self, indices: list[int]) -> int:
        """The shift of a batch: fixed, or drawn from `(seed, epoch, position)` that the sampler attaches to it."""
        if len(self.shift_choices) == 1:
            return self.shift_choices[0]
        seed, epoch, position = (getattr(indices, name, None) for name in ("seed", "epoch", "position"))
        if seed is None or epoch is None or position is None:
            seed, epoch, position = 0, 0, min(indices) if len(indices) else 0
        seed = int(seed)  # a negative seed (any integer is one) drawn apart: numpy takes non-negative entropy only
        rng = np.random.default_rng((seed, int(epoch), int(position)) if seed >= 0 else (-seed, int(epoch), int(position), 1))
        return self.shift_choices[int(rng.integers(len(self.shift_choices)))]

    def _batch(self, sample_ids: np.ndarray, shift: int, into: dict[str, np.ndarray] | None = None,
               step: tuple | None = None) -> GatheredBatch:
        """The batch of `sample_ids` (checked); `step`: their located windows and ids tensor from a ChunkPlan (window_copy)."""
        b = len(sample_ids)
        if step is None:
            starts = (sample_ids + self._windows.start) * self.stride
            step = (starts, *locate_windows(self, starts, shift), None, None)
        starts, ids_tensor = step[0], step[5]
        out = np.empty((2, b, self.seq_len), dtype=self._host_dtype) if into is None else into["tokens"][:, :b]
        tokens, positions = copy_windows(self, *step[:5], shift, out, step[6]), None
        if self._doc_starts is not None:
            positions = self._doc_starts.position_ids(starts, self.seq_len, self._host_dtype)
            if into is not None:
                into["position_ids"][:b] = positions
                positions = into["position_ids"][:b]
        if into is not None:
            into["sample_ids"][:b] = sample_ids
            ids_tensor = into["sample_ids"][:b]
        return self.batch_fields(tokens, positions, sample_ids.copy() if ids_tensor is None else ids_tensor, shift)

    def batch_fields(self, tokens: np.ndarray, positions: np.ndarray | None, sample_ids: Any, shift: int,
                     batch: GatheredBatch | None = None) -> GatheredBatch:
        """The batch (module docstring) over gathered arrays, which its tensors view: tokens [2, B, seq_len] (inputs,
        labels), positions [B, seq_len] (doc_starts=True, else None), sample_ids [B] (array or tensor); its fields added
        to `batch` when given. A Mixture of TokenWindows makes its batch here too, from rows its sources gathered."""
        b = tokens.shape[1]
        input_ids, labels = token_halves(tokens)  # the two halves of one array, as the docstring of gather says
        if self.layout == "grouped":
            input_ids = input_ids.view(b, self.seq_len // shift, shift)
            labels = labels.view(b, self.seq_len // shift, shift)
        batch = GatheredBatch() if batch is None else batch
        batch["input_ids"], batch["labels"] = input_ids, labels
        if positions is not None:
            batch["position_ids"] = torch.from_numpy(positions).view(input_ids.shape)
            bounds, batch["max_seqlen"] = cu_seqlens(positions.reshape(b, -1))
            batch["cu_seqlens"] = torch.from_numpy(bounds)
        batch["sample_ids"] = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.from_numpy(sample_ids)
        if self.shift == "random":
            batch["shift"] = shift
        return batch

    def slot_layout(self, batch_size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The arrays one batch of up to `batch_size` samples is gathered into (`getitems_into`): {name: (shape, dtype)}."""
        layout = {"tokens": ((2, batch_size, self.seq_len), self._host_dtype), "sample_ids": ((batch_size,), np.dtype(np.int64))}
        if self._doc_starts is not None:
            layout["position_ids"] = ((batch_size, self.seq_len), self._host_dtype)
        return layout

    def getitems_into(self, indices: list[int], into: dict[str, np.ndarray]) -> dict[str, Any]:
        """`__getitems__`, gathered into the arrays of `slot_layout` (a worker's shared-memory ring slot): the batch's
        tensors view them."""
        plan, k = self._planned(indices)
        if plan is None:
            return self._batch(self._check_ids(indices), self.batch_shift(indices), into)
        return self._batch(plan.ids[k], self.batch_shift(indices), into, plan.step(k))

    def gather_rows(self, sample_ids: np.ndarray, shift: int, into: dict[str, np.ndarray], rows: np.ndarray) -> None:
        """Samples `sample_ids` (int64, known to be in range: not checked) with labels `shift` ahead, written into rows
        `rows` of the `slot_layout` arrays `into` (tokens, position_ids; not sample_ids): the lean gather through which
        a Mixture's sources fill one batch together, with no batch of their own and no copy after."""
        starts = (sample_ids + self._windows.start) * self.stride
        self.gather(starts, shift, into["tokens"], rows)
        if self._doc_starts is not None:
            into["position_ids"][rows] = self._doc_starts.position_ids(starts, self.seq_len, self._host_dtype)

    # Gathering
    def gather(self, starts: np.ndarray, shift: int, out: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """[2, B, seq_len] host tokens of the windows of valid samples at global tokens `starts`: inputs there, labels
        `shift` later; one array, two contiguous halves (into `out` when given, e.g. a ring slot; at its rows `rows`
        when given, else its first B), copied as `sdl.loader.data.window_copy` says (`copy_windows`, or `copy_rows`
        for a mixture source's rows)."""
        if out is None:
            out = np.empty((2, len(starts), self.seq_len), dtype=self._host_dtype)
        if rows is None:
            return copy_windows(self, starts, *locate_windows(self, starts, shift), shift, out)
        return copy_rows(self, starts, shift, out, rows)

    def with_host_dtype(self, dtype: Any) -> TokenWindows:
        """A copy that gathers tokens as `dtype`: make_loader asks for `wire_dtype` when batches go to a GPU (half the
        bytes to copy), and keeps int64 when they stay on the CPU, so the tokens are widened by the gather's own
        copy instead of a second pass (measured: ~70 µs a 16×2048 batch)."""
        other = copy.copy(self)
        other._host_dtype = np.dtype(dtype)
        other._open = other.open_sources()
        other._doc_starts = self._doc_starts and self._doc_starts.detached()
        return other
