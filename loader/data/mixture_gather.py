"""How a Mixture fills a batch from its sources: from a plan of its positions, straight into its rows, or assembled.

Planned (`RowGather.planned_batch`): when every source is a TokenWindows of one row layout (same `slot_layout`),
shift choices, layout and shard dtype, a batch whose positions a plan holds (`sdl.loader.data.mixture_plan`: the
sampler's chunk of steps in process, whose steps take the lean route of `sdl.loader.data.mixture_step` when the
sources have one fixed shift, flat layout and no document positions; in a DataLoader worker, its task and its next
tasks, `mixture_step.task_positions`; else a run of consecutive positions) is gathered in batch order into one buffer
and cast into the batch's arrays — its own, or a worker's ring slot (`Mixture.getitems_into`). A random shift is drawn
once per batch from its (seed, epoch, position), as every source would draw it.
Measured on one 16 × 2,048 batch of a 2-source mixture against one source alone (BENCHMARKS.md, "Mixtures from a
plan"; the whole loader: "Round 13"): 0.40× on the row route below, 0.77–0.83× planned, in the same process.

Row gather (`gather_batch`, the planned route's fallback: positions that are neither a planned step nor consecutive,
or sources whose shifts differ): each source writes its samples into its rows of one set of arrays; a fixed shift is
each source's own.

Assembled (any other source: ZarrSamples, ArrowRows, a nested Mixture, renamed fields): each source's own
`__getitems__` batch (a nested Mixture's `stream_items`), its rows copied into place field by field (`assemble_batch`).
All routes give the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sdl.loader.data.batch import GatheredBatch
from sdl.loader.data.documents import cu_seqlens
from sdl.loader.data.mixture_phase import is_phase
from sdl.loader.data.mixture_plan import PLAN_POSITIONS, RowPlan
from sdl.loader.data.mixture_step import StepPlan, task_positions
from sdl.loader.data.windows import BATCH_ONLY_KEYS
from sdl.loader.errors import ConfigError
from sdl.loader.sampling.sampler import SampleBatch

Layout = dict[str, tuple[tuple[int, ...], Any]]
INT64 = np.dtype(np.int64)


def batch_key(indices: Sequence[int], has_phase: bool) -> tuple[np.ndarray, SampleBatch, int, int]:
    """The positions of a batch, the (seed, epoch, position) its sources draw per-batch randomness from (the sampler's
    when the batch carries a mixture phase, else seed 0, epoch 0: a plain DataLoader, `mixture[i]`), its least and
    greatest position (-1, -1 when empty)."""
    positions = np.asarray(indices, dtype=np.int64).reshape(-1)
    if not positions.size:
        lo = hi = -1
    elif isinstance(indices, list):  # a sampler's batch: Python's min/max of 16 ints beat numpy's reductions
        lo, hi = int(min(indices)), int(max(indices))
    else:
        lo, hi = int(positions.min()), int(positions.max())
    seed, epoch = (int(getattr(indices, "seed", 0)), int(getattr(indices, "epoch", 0))) if has_phase else (0, 0)
    position = getattr(indices, "position", None)
    return positions, SampleBatch((), seed=seed, epoch=epoch, position=max(lo, 0) if position is None else int(position)), lo, hi


class RowGather:
    """A mixture's per-process state for making batches: the one-row layout its sources share when every source
    gathers rows (None: assemble), and the chunk of positions it located last."""

    def __init__(self, sources: tuple, rename: dict[str, Any], chunk: int) -> None:
        self.sources, self.rename, self.chunk = sources, rename, chunk
        self.layout = row_layout(sources, rename)
        self.planned = self.layout is not None and len({(tuple(s.shift_choices), s.layout, s._shard_dtype) for s in sources}) == 1
        first = sources[0]  # lean: a batch of a StepPlan needs no shift drawn, no grouped view, no document positions
        self.lean = self.planned and first._lean  # TokenWindows' own: one fixed shift, flat layout, no document positions
        self._layouts: dict[int, Layout] = {}  # the sources' slot layout by batch size (in process)
        self._hot: tuple | None = None  # (first position, end, seed, epoch, context, source, ids)
        self._range: tuple | None = None  # (RowPlan, its first position, (seed, epoch, context)): consecutive positions planned last
        self._tasks: tuple | None = None  # (RowPlan, first position, distance, tasks, (seed, epoch, context)): a worker's next tasks
        self._kept: list = [None, -1]  # the last SpanView a plan made, which the next plan takes when it holds the same maps

    def __reduce__(self) -> tuple:  # a worker starts with empty caches
        return (RowGather, (self.sources, self.rename, self.chunk))

    def slot_layout(self, batch_size: int) -> Layout:
        """A batch's arrays: its sources' (tokens, sample_ids, position_ids), and the source and id of each row."""
        extra = {"source": ((batch_size,), INT64), "source_ids": ((batch_size,), INT64)}
        return self.sources[0].slot_layout(batch_size) | extra

    def batch(self, mixture: Any, indices: Sequence[int], into: dict[str, np.ndarray] | None = None) -> GatheredBatch:
        """Mixture positions `indices` as one batch: gathered by rows (into `into`, else new arrays) when the sources
        can, else assembled."""
        context = getattr(indices, "context", None)
        if self.planned and isinstance(indices, list) and indices:
            batch = self.planned_batch(mixture, indices, context, into)
            if batch is not None:
                return batch
        positions, key, lo, hi = batch_key(indices, is_phase(context))
        source, ids = self.locate(mixture, positions, lo, hi, key, context)
        if self.layout is not None and positions.size:
            if into is None:  # in process: the batch's own arrays; its positions, sources and ids are already fresh
                layout = self._layouts.get(len(positions))
                if layout is None:
                    layout = self._layouts[len(positions)] = self.sources[0].slot_layout(len(positions))
                into = {name: np.empty(shape, dtype) for name, (shape, dtype) in layout.items()}
            batch = gather_batch(mixture, positions, source, ids, key, into)
            if batch is not None:
                return batch
        return assemble_batch(mixture, positions, source, ids, key)

    def planned_batch(self, mixture: Any, indices: list[int], context: Any, into: dict[str, np.ndarray] | None) -> GatheredBatch | None:
        """The batch `indices` from a plan of its rows (mixture_plan), gathered in batch order as one source's batch is:
        the sampler's StepChunk's plan (in process), a worker's plan of its next tasks, else the plan of the consecutive
        positions from here on (made when the last one does not hold them); None when none applies (positions not
        consecutive, or out of range)."""
        seed, epoch = (int(indices.seed), int(indices.epoch)) if is_phase(context) else (0, 0)
        chunk = getattr(indices, "chunk", None)
        plan = None if chunk is None or into is not None else chunk.prepared
        if chunk is not None and into is None and (plan is None or plan.owner is not self):
            plan = self._step_plan(mixture, chunk, seed, epoch, context, (indices.seed, indices.epoch))
        i = -1 if plan is None else plan.find(indices, seed, epoch, context)
        if i >= 0:
            rows = plan.rows
        else:
            planned = self._task_plan if chunk is not None and into is not None else self._range_plan  # a worker's task
            rows, i = planned(mixture, indices, seed, epoch, context)
            if rows is None:
                return None
        # Step: the rows, gathered; then the batch over the arrays.
        first, b = self.sources[0], len(indices)
        shift = first.shift_choices[0] if len(first.shift_choices) == 1 else first.batch_shift(batch_key(indices, is_phase(context))[1])
        if into is None:
            tokens = np.empty((2, b, first.seq_len), dtype=first._host_dtype)
            positions = None if first._doc_starts is None else np.empty((b, first.seq_len), dtype=first._host_dtype)
        else:
            tokens, positions = into["tokens"][:, :b], into["position_ids"][:b] if "position_ids" in into else None
        rows.gather(i, b, shift, tokens, positions)
        if into is not None and "source" in into:  # a ring slot: sample_ids, source, source_ids copied into it
            columns = into["sample_ids"][:b], into["source"][:b], into["source_ids"][:b]
            for column, values in zip(columns, rows.columns[:, i:i + b]):
                column[:] = values
        else:
            columns = rows.columns[:, i:i + b].copy()  # the batch's own (never the plan's)
        batch = GatheredBatch(sample_ids=None, source=torch.from_numpy(columns[1]), source_ids=torch.from_numpy(columns[2]))
        return first.batch_fields(tokens, positions, columns[0], shift, batch)

    def _step_plan(self, mixture: Any, chunk: Any, seed: int, epoch: int, context: Any, carried: tuple) -> StepPlan | None:
        """The StepPlan of a sampler's `chunk` of steps (made on its first step, then kept on it); None off the epoch."""
        positions = chunk.ids.reshape(-1)
        if not positions.size or positions.min() < 0 or positions.max() >= mixture.num_samples:
            return None
        source, ids = mixture.locate_all(positions, seed=seed, epoch=epoch, context=context)
        rows = RowPlan(self.sources, positions, source, ids, self._kept)
        chunk.prepared = StepPlan(self, rows, chunk.ids, seed, epoch, context, carried)
        return chunk.prepared

    def _task_plan(self, mixture: Any, indices: Any, seed: int, epoch: int, context: Any) -> tuple[RowPlan | None, int]:
        """In a DataLoader worker: the RowPlan holding the positions of `indices`' task and of the worker's next tasks
        (the last one made, or one from this task on: `task_positions`) and where `indices` start in it; a task of
        steps not evenly spaced goes to `_range_plan`."""
        ids, i = indices.chunk.ids, indices.step * len(indices)
        if self._tasks is not None:
            rows, first, distance, count, stamp = self._tasks
            task, off = divmod(int(ids[0, 0]) - first, distance)
            at = task * ids.size + i
            if not off and 0 <= task < count and same_phase(stamp, seed, epoch, context) \
                    and indices == rows.position_list[at:at + len(indices)]:
                return rows, at
        info = torch.utils.data.get_worker_info()
        found = task_positions(ids, mixture.num_samples, 1 if info is None else info.num_workers)
        if found is None:
            return self._range_plan(mixture, indices, seed, epoch, context)
        positions, distance, count = found
        rows = RowPlan(self.sources, positions, *mixture.locate_all(positions, seed=seed, epoch=epoch, context=context), self._kept)
        self._tasks = (rows, int(ids[0, 0]), distance, count, (seed, epoch, context))
        return (rows, i) if indices == rows.position_list[i:i + len(indices)] else self._range_plan(mixture, indices, seed, epoch, context)

    def _range_plan(self, mixture: Any, indices: list[int], seed: int, epoch: int, context: Any) -> tuple[RowPlan | None, int]:
        """The RowPlan holding the consecutive positions `indices` (that of the last batch, or one of the PLAN_POSITIONS
        positions from here) and where they start in it; (None, -1) when they are not consecutive positions."""
        lo, b = indices[0], len(indices)
        if self._range is not None:
            rows, start, stamp = self._range
            i = lo - start
            if 0 <= i <= rows.size - b and same_phase(stamp, seed, epoch, context) and indices == rows.position_list[i:i + b]:
                return rows, i
        if not 0 <= lo <= mixture.num_samples - b or indices != list(range(lo, lo + b)):
            return None, -1
        positions = np.arange(lo, min(lo + max(PLAN_POSITIONS, b), mixture.num_samples), dtype=np.int64)
        rows = RowPlan(self.sources, positions, *mixture.locate_all(positions, seed=seed, epoch=epoch, context=context), self._kept)
        self._range = (rows, lo, (seed, epoch, context))
        return rows, 0

    def locate(self, mixture: Any, positions: np.ndarray, lo: int, hi: int, key: SampleBatch,
               context: Any) -> tuple[np.ndarray, np.ndarray]:
        """`mixture.locate(positions)` (lo, hi: their least and greatest), looked up in the whole chunk of positions it
        located last: consecutive batches fall in one chunk, and the lookup is then one subtraction and two takes."""
        hot = self._hot
        if hot is None or not (hot[0] <= lo and hi < hot[1] and same_phase(hot[2:5], key.seed, key.epoch, context)):
            start = lo - lo % self.chunk
            end = min(start + self.chunk, mixture.num_samples)
            if not positions.size or lo < 0 or hi >= end:  # out of range (locate says so), or across chunks
                return mixture.locate(positions, seed=key.seed, epoch=key.epoch, context=context)
            whole = np.arange(start, end, dtype=np.int64)
            hot = self._hot = (start, end, key.seed, key.epoch, context,
                               *mixture.locate(whole, seed=key.seed, epoch=key.epoch, context=context))
        at = positions - hot[0]
        return hot[5][at], hot[6][at]


def same_phase(stamp: tuple, seed: int, epoch: int, context: Any) -> bool:
    """Whether a plan's (seed, epoch, context) is that of a batch (a context is compared by identity first)."""
    return stamp[0] == seed and stamp[1] == epoch and (stamp[2] is context or stamp[2] == context)


def row_layout(sources: Sequence[Any], rename: dict[str, Any]) -> Layout | None:
    """The one-row slot layout that every source shares when each can gather rows into a caller's arrays; else None."""
    if any(rename.values()) or not all(hasattr(s, "gather_rows") and hasattr(s, "batch_fields") for s in sources):
        return None
    layouts = [source.slot_layout(1) for source in sources]
    return layouts[0] if all(layout == layouts[0] for layout in layouts) else None


def gather_batch(mixture: Any, positions: np.ndarray, source: np.ndarray, ids: np.ndarray, key: SampleBatch,
                 into: dict[str, np.ndarray]) -> GatheredBatch | None:
    """The batch of `positions` (at `source`, `ids`), each source writing its rows into the `slot_layout` arrays `into`;
    None when the sources present draw different shifts and the batch needs one (grouped layout, shift="random")."""
    # Step: each present source's rows and shift (a random shift drawn once per set of choices: the same for all).
    plan, drawn = [], {}
    for s, dataset in enumerate(mixture.sources):
        rows = np.flatnonzero(source == s)
        if rows.size:
            choices = dataset.shift_choices
            shift = choices[0] if len(choices) == 1 else drawn.get(tuple(choices))
            if shift is None:
                shift = drawn[tuple(choices)] = dataset.batch_shift(key)
            plan.append((dataset, rows, shift))
    first, shift = plan[0][0], plan[0][2]
    if len(plan) > 1 and len({step[2] for step in plan}) > 1 and (first.layout == "grouped" or first.shift == "random"):
        return None
    # Step: the rows, gathered in place; then the batch over the arrays.
    for dataset, rows, row_shift in plan:
        dataset.gather_rows(ids[rows], row_shift, into, rows)
    b = len(positions)
    if "source" in into:  # a ring slot: the batch's every array in it
        into["source"][:b], into["source_ids"][:b], into["sample_ids"][:b] = source, ids, positions
        positions, source, ids = into["sample_ids"][:b], into["source"][:b], into["source_ids"][:b]
    batch = GatheredBatch(sample_ids=None, source=torch.from_numpy(source), source_ids=torch.from_numpy(ids))
    return first.batch_fields(into["tokens"][:, :b], into["position_ids"][:b] if "position_ids" in into else None,
                              positions, shift, batch)


# Step: the general route.
def assemble_batch(mixture: Any, positions: np.ndarray, source: np.ndarray, ids: np.ndarray, key: SampleBatch) -> GatheredBatch:
    """The batch from each source's own `__getitems__`, its rows copied into place field by field."""
    parts = []
    for s, dataset in enumerate(mixture.sources):
        where = np.flatnonzero(source == s)
        if where.size and mixture._streamed[s]:  # a nested mixture: ids are its stream positions (Mixture.stream_items)
            parts.append((where, mixture._renamed(s, dataset.stream_items(ids[where], key.seed, key=key))))
        elif where.size:
            sub = SampleBatch(ids[where].tolist(), seed=key.seed, epoch=key.epoch, position=key.position)
            parts.append((where, mixture._renamed(s, dataset.__getitems__(sub))))
    batch = GatheredBatch(sample_ids=torch.from_numpy(positions), source=torch.from_numpy(source),
                          source_ids=torch.from_numpy(ids))
    for name in mixture.fields:
        batch[name] = _assemble(name, len(positions), [(where, part[name]) for where, part in parts])
    if len(parts) > 1 and "position_ids" in batch and set(BATCH_ONLY_KEYS) <= set(batch):
        # the sources' document segments describe their own sub-batches: those of the whole batch, from its positions
        bounds, batch["max_seqlen"] = cu_seqlens(batch["position_ids"].numpy().reshape(len(positions), -1))
        batch["cu_seqlens"] = torch.from_numpy(bounds)
    return batch


def _assemble(name: str, size: int, parts: list[tuple[np.ndarray, Any]]) -> Any:
    """One field of the batch from the sources' sub-batches, each at its rows `where`."""
    first = parts[0][1]
    if len(parts) == 1:
        return first  # the whole batch came from one source, in order
    if name in BATCH_ONLY_KEYS:
        return first  # made again from the whole batch (assemble_batch)
    if isinstance(first, (torch.Tensor, np.ndarray)):  # numpy row assignment: torch's index_put took ~10 ms a 16x512 batch
        arrays = [(where, value.numpy() if isinstance(value, torch.Tensor) else value) for where, value in parts]
        out = np.empty((size, *arrays[0][1].shape[1:]), dtype=arrays[0][1].dtype)
        for where, value in arrays:
            out[where] = value
        return torch.from_numpy(out) if isinstance(first, torch.Tensor) else out
    if isinstance(first, list):
        rows: list[Any] = [None] * size
        for where, value in parts:
            for row, item in zip(where.tolist(), value):
                rows[row] = item
        return rows
    if any(value != first for _, value in parts):
        raise ConfigError(f"mixture sources gave different values of the batch-wide field {name!r} "
                          f"({[value for _, value in parts]}) for one batch; make their sample definitions agree")
    return first
