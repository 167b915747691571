"""Copying token windows out of shards into a batch (TokenWindows' gather): the copy, and a chunk of steps planned at once.

The copy: each window is `seq_len + shift` tokens; inputs are its first `seq_len`, labels its last `seq_len`.
The windows are first gathered in the shards' own dtype into one `[B, seq_len + shift]` array, then cast
into the output's two contiguous halves by two bulk copies. When every window of a batch lies inside one
shard, the gather is a single fancy index of a strided *window view* of that shard (row i = tokens
[i, i + span)): numpy copies row by row in C; when they lie in several shards, one fancy index of a SpanView over
the chunk's shards (`ChunkPlan.spanned`), a window across a shard boundary then read piecewise into its row.
Otherwise (more shards than the LRU keeps open, an object store's) each window is one slice copy. Measured on the
bench's 16 × 2048 uint32 → int64 batches (2-core VM, same run, minimum of 11 rounds of 256 batches): per-row casting
slice copies of inputs and labels 38.5 µs, per-row window copies into the temporary then two casts 32.6 µs, one
window-view gather then two casts 25.3 µs.

The plan: the sampler computes the order of ~4,096 samples in one call and hands each step's SampleBatch a
reference to that chunk (`sdl.loader.sampling.sampler.StepChunk`). Checking the ids, computing window starts
and locating them in the shards then runs once, vectorised, for the whole chunk (each costs ~2–4 µs of numpy
call overhead whether for 16 ids or 4,096), and a step only copies its windows. A SampleBatch whose list no longer
equals its chunk row (changed in place after the sampler made it) is gathered from its list, as any other list.
"""

from __future__ import annotations

import weakref
from bisect import bisect_right
from typing import Any

import numpy as np
import torch
from sdl.loader.data.batch import GatheredBatch, token_halves
from sdl.loader.data.span_view import SpanView
from sdl.loader.index.handles import OutOfDescriptors

SPAN_SHARDS = 4096  # a chunk over at most this many shards (and the LRU's max_open) gathers each step by one fancy index


class ChunkPlan:
    """Where the windows of a chunk of steps lie ([steps, B] arrays), located once; `single[k]` is the shard holding
    every window of step k whole, or -1; `spanned(k)`, for a step whose windows lie in several shards, their rows in a
    SpanView over the chunk's shards (one fancy index for the batch, as for one shard; a window across two shards is
    then read piecewise into its row: `span_windows`)."""

    __slots__ = ("owner", "ids", "id_lists", "starts", "first", "offsets", "inside", "single", "sample_ids", "max_span",
                 "_span", "_visit", "_across", "__weakref__")

    def __init__(self, owner: Any, ids: np.ndarray, max_span: int) -> None:
        self.owner, self.ids, self.id_lists = owner, ids, ids.tolist()  # id_lists: to compare with a SampleBatch (~0.2 µs)
        self.starts = (ids + owner._windows.start) * owner.stride
        self.first, self.offsets = owner.index.locate(self.starts)
        self.inside = self.offsets + max_span <= owner._lengths[self.first]
        inside = self.inside.all(axis=1)
        whole = (self.first == self.first[:, :1]).all(axis=1) & inside
        self.single = np.where(whole, self.first[:, 0], -1).tolist()
        # A tensor per step over a copy of the ids (a caller editing a batch edits no plan), each handed out once
        self.sample_ids = list(torch.from_numpy(ids.copy()).unbind(0))
        self.max_span, self._span = max_span, None
        # Per step: a shard holding one of its windows whole (the batch's LRU visit), or -1; the rows of windows across
        # two shards, for the steps that have any.
        some = self.inside.argmax(axis=1)
        self._visit = np.where(self.inside.any(axis=1), np.take_along_axis(self.first, some[:, None], 1)[:, 0], -1).tolist()
        self._across: dict[int, list[int]] = {}
        for k, row in np.argwhere(~self.inside).tolist():
            self._across.setdefault(k, []).append(row)

    def take_ids(self, k: int) -> torch.Tensor:
        """Step k's sample_ids tensor: the plan's the first time, a fresh copy if the step is asked for again."""
        ids = self.sample_ids[k]
        if ids is None:
            return torch.from_numpy(self.ids[k].copy())
        self.sample_ids[k] = None
        return ids

    def step(self, k: int) -> tuple:
        """Step k's (starts, first, offsets, inside, single, sample_ids tensor, (this plan, k) when its windows lie in
        several shards: `span_windows`), what TokenWindows._batch takes."""
        spanned = (self, k) if self.single[k] < 0 else None
        return self.starts[k], self.first[k], self.offsets[k], self.inside[k], self.single[k], self.take_ids(k), spanned

    def spanned(self, k: int) -> tuple[SpanView, np.ndarray, list[int]] | None:
        """(the chunk's SpanView, step k's rows in it, the rows of its windows across two shards, whose rows in the view
        are placeholders) when a window of step k lies whole in a shard of a local dataset and the chunk's windows lie in
        at most SPAN_SHARDS shards that the dataset's LRU keeps open; else None.

        Made on the first such step, over shards taken through the LRU. Every shard a batch reads stays one the LRU
        holds (so its size checks cover it, see `sdl.loader.index.handles`): one LRU visit a batch, as a one-shard
        batch pays, and when the LRU has closed any shard since the view was made, the view is made again unless all
        its shards are still the LRU's. One plan of a dataset holds a view at a time: a new plan takes the last view
        (see `_make_span`) or makes one and drops the last plan's (a caller keeping many chunks' batches keeps no more
        maps than the LRU's and one view's)."""
        shard = self._visit[k]
        if shard < 0:
            return None
        made = self._span or self._make_span()
        view = made[0]
        if view is None:
            return None
        reopened = self.owner._shard(shard) is not view.held(shard)  # one LRU visit a batch, as a one-shard batch pays
        lru = self.owner._open
        if reopened or made[2] is not lru or made[3] != lru.evictions:  # a shard closed since: still all the view's?
            made = (view, made[1], lru, lru.evictions) if made[2] is lru and lru.holds_all(view.shards) else self._make_span()
            view = made[0]
            if view is None:
                return None
        self._span = made
        return view, made[1][k], self._across.get(k, ())

    def span_windows(self, k: int, span: int) -> np.ndarray | None:
        """Step k's [B, span] windows in the shards' dtype by one fancy index of the chunk's SpanView (its rows are
        max_span long: the first `span` tokens are this batch's), a window across two shards then read piecewise into
        its row, from the view's maps where it has them; None when the step has no view (see `spanned`). Only this
        call holds the view meanwhile: out of descriptors, the LRUs' owners let go of it, and so does this read."""
        spanned = self.spanned(k)
        if spanned is None:
            return None
        view, rows, across = spanned
        windows = view.view[rows]
        if view.span != span:
            windows = windows[:, :span]
        held = view.shards if across else None
        del spanned, view
        for row in across:
            try:
                self.owner._read_span(int(self.starts[k][row]), span, windows[row], held)
                continue
            except OutOfDescriptors:  # the view's maps may be what is missing: read without them
                held = None
            self.owner._read_span(int(self.starts[k][row]), span, windows[row])  # (the error's frames, which held them, gone)
        return windows

    def _make_span(self) -> tuple:
        """(SpanView, rows [steps, B], the LRU, its evictions when made); Nones when the chunk cannot have one. The
        dataset keeps the last view made (`_spanning`: the plan using it, the view, its LRU), which serves again when it
        holds every shard of this chunk and every shard it holds is still the LRU's: a global shuffle over hundreds of
        shards makes one view, not one per chunk (~2 µs a shard)."""
        owner, lru = self.owner, self.owner._open
        last, kept, kept_lru = owner._spanning or (lambda: None, None, None)
        last = last()
        self._span = made = (None, None, None, None)
        if last is not None and last is not self:
            last._span = None  # its maps are the LRU's again; a step of it asked again makes a view again
        owner._spanning = None
        shards = np.unique(self.first[self.inside]).tolist()
        if owner.remote is not None or not 0 < len(shards) <= min(SPAN_SHARDS, lru.max_open):
            return made
        reusable = kept is not None and kept_lru is lru and all(shard in kept.start for shard in shards)
        if not reusable or not lru.holds_all(kept.shards):
            try:
                kept = SpanView({shard: owner._shard(shard) for shard in shards}, self.max_span)
            except (ValueError, OutOfDescriptors):  # out of descriptors: the shards it opened are the LRU's alone again
                return made
        owner._spanning = (weakref.ref(self), kept, lru)
        placeholder = shards[0]  # the row of a window across shards (read piecewise over it: span_windows)
        rows = kept.rows(np.where(self.inside, self.first, placeholder), np.where(self.inside, self.offsets, 0))
        self._span = made = (kept, rows, lru, lru.evictions)
        return made


def plan_of(dataset: Any, chunk: Any) -> ChunkPlan:
    """The dataset's plan of `chunk` (a StepChunk), made on its first step and kept on the chunk for the others. A
    window counts as inside its shard when it is for the largest shift the dataset may draw."""
    plan = chunk.prepared
    if plan is None or plan.owner is not dataset:
        ids = chunk.ids
        if ids.size and (ids.min() < 0 or ids.max() >= len(dataset)):
            dataset._check_ids(ids)  # raises, naming the sample
        plan = chunk.prepared = ChunkPlan(dataset, ids, dataset.seq_len + max(dataset.shift_choices))
    return plan


def locate_windows(dataset: Any, starts: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(shard, offset, whether the window lies whole in it) of each window start, and the single shard or -1."""
    first, offsets = dataset.index.locate(starts)
    inside = offsets + (dataset.seq_len + shift) <= dataset._lengths[first]
    return first, offsets, inside, single_shard(first, inside)


def single_shard(first: np.ndarray, inside: np.ndarray) -> int:
    """The shard holding every window whole (all `inside`, all in `first[0]`), or -1."""
    return int(first[0]) if len(first) and inside.all() and (first == first[0]).all() else -1


def copy_windows(dataset: Any, starts: np.ndarray, first: np.ndarray, offsets: np.ndarray, inside: np.ndarray,
                 single: int, shift: int, out: np.ndarray, spanned: tuple | None = None) -> np.ndarray:
    """Fill `out` ([2, B, seq_len]) with the inputs and labels of the windows at global `starts` (located: `first`,
    `offsets`; `inside`: the window lies whole in its shard; `single`: see `single_shard`; `spanned`: (a ChunkPlan,
    step), whose `span_windows` gathers them when it can)."""
    windows = None if spanned is None else spanned[0].span_windows(spanned[1], dataset.seq_len + shift)
    if windows is None:
        windows = gather_windows(dataset, starts, first, offsets, inside, single, shift)
    out[0] = windows[:, :dataset.seq_len]
    out[1] = windows[:, shift:]
    return out


def gather_windows(dataset: Any, starts: np.ndarray, first: Any, offsets: Any, inside: Any, single: int,
                   shift: int) -> np.ndarray:
    """[B, seq_len + shift] windows in the shards' dtype: one window-view gather when `single` >= 0 holds them all,
    else one slice copy each (a piecewise read for a window across shards)."""
    span = dataset.seq_len + shift
    if single >= 0:
        return dataset._window_view(single, span)[np.asarray(offsets, dtype=np.int64)]
    windows = np.empty((len(starts), span), dtype=dataset._shard_dtype)
    shards: dict[int, np.ndarray] = {}  # this batch's shards: one LRU visit per shard, not per row
    first, offsets, inside = (x.tolist() if isinstance(x, np.ndarray) else x for x in (first, offsets, inside))
    for row, (source_id, offset, fits) in enumerate(zip(first, offsets, inside)):
        if fits:
            shard = shards.get(source_id)
            if shard is None:
                try:
                    shard = shards[source_id] = dataset._shard(source_id)
                except OutOfDescriptors:  # the maps this batch holds may be what is missing: held no longer
                    shards.clear()
                if shard is None:
                    shard = dataset._shard(source_id)
            windows[row] = shard[offset:offset + span]
        else:
            try:
                windows[row] = dataset._read_span(int(starts[row]), span)
                continue
            except OutOfDescriptors:  # as above
                shards.clear()
            windows[row] = dataset._read_span(int(starts[row]), span)
    return windows


def copy_rows(dataset: Any, starts: np.ndarray, shift: int, out: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`copy_windows` into rows `rows` of `out`, for a mixture source's few rows: each row's shard found by bisection
    (saves the vectorised lookup's ~5 µs a call)."""
    span = dataset.seq_len + shift
    bounds, lengths, many = dataset._shard_starts, dataset._shard_lengths, len(dataset._shard_lengths) > 1
    first = [bisect_right(bounds, start) - 1 if many else 0 for start in starts.tolist()]
    offsets = [start - bounds[source_id] for source_id, start in zip(first, starts.tolist())]
    inside = [offset + span <= lengths[source_id] for source_id, offset in zip(first, offsets)]
    single = first[0] if first and all(inside) and first.count(first[0]) == len(first) else -1
    windows = gather_windows(dataset, starts, first, offsets, inside, single, shift)
    out[0][rows], out[1][rows] = windows[:, :dataset.seq_len], windows[:, shift:]
    return out


def one_shard_batch(dataset: Any, shard: int, offsets: np.ndarray, sample_ids: torch.Tensor) -> GatheredBatch:
    """TokenWindows' batch for a lean dataset (fixed shift, flat layout, no document positions) whose windows all lie
    in shard `shard` at `offsets`: one window-view gather, two casting copies, three tensors, nothing else."""
    return windows_batch(dataset, dataset._window_view(shard, dataset.seq_len + dataset.shift_choices[0])[offsets], sample_ids)


def windows_batch(dataset: Any, windows: np.ndarray, sample_ids: torch.Tensor) -> GatheredBatch:
    """A lean dataset's batch of gathered `windows` ([B, seq_len + shift] in the shards' dtype): two casting copies,
    three tensors. `one_shard_batch`'s, and that of a step gathered from a SpanView (its rows are max_span long:
    a lean dataset's one span)."""
    seq_len, shift = dataset.seq_len, dataset.shift_choices[0]
    tokens = np.empty((2, len(windows), seq_len), dtype=dataset._host_dtype)
    tokens[0] = windows[:, :seq_len]
    tokens[1] = windows[:, shift:]
    input_ids, labels = token_halves(tokens)
    return GatheredBatch(input_ids=input_ids, labels=labels, sample_ids=sample_ids)
