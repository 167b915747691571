"""A sampler's chunk of steps of a Mixture, planned: the batch of each step from its rows, and the lean route.

A StepPlan is a RowPlan (`sdl.loader.data.mixture_plan`) of exactly the positions of a sampler's StepChunk (kept in
its `prepared`): the rank's next ~256 steps, in any order (shuffle=True too). Step k's batch is rows [k·B, (k + 1)·B).

Lean route (`lean_batch`: sources of one fixed shift, flat layout, no document positions; `Mixture.__getitems__` tries
it first): a step is the LRU visit one source's batch pays, one fancy index of the plan's SpanView
(`RowPlan.lean_windows`; a window across shards then read piecewise into its row), two casting copies, and three id
tensors made per chunk by one unbind each. A step after an LRU of the process closed a shard (the plan's maps are then
taken through the LRUs again, `RowPlan._keep_open`), or whose first window crosses shards, goes through
`RowPlan.gather`.

A DataLoader worker's task (consecutive steps, gathered into a ring slot) is planned with the worker's next tasks
(`task_positions`), which the worker's RowGather looks up and verifies batch by batch.
Measured (bench's 2-source mixture, 16 × 2,048 uint32 → int64, 2-core VM, `sdl bench --mixture`): see BENCHMARKS.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sdl.loader.data.batch import GatheredBatch
from sdl.loader.data.mixture_plan import PLAN_POSITIONS, RowPlan


def task_positions(ids: np.ndarray, num_samples: int, workers: int) -> tuple[np.ndarray, int, int] | None:
    """A worker's task (its steps' positions, [steps, B]) and the worker's next tasks: (their positions, task after
    task, the distance from one task of the worker to its next, the number of tasks), whole tasks inside the epoch
    [0, num_samples), ~PLAN_POSITIONS positions in all. Step s of a rank of a sampler without shuffle is at s·G plus
    the rank's offset, and the DataLoader deals a worker every `workers`-th task, so its next task is this one moved by
    workers · steps · G. None when the steps are not evenly spaced (shuffle=True) or leave the epoch."""
    steps = len(ids)
    if steps < 2 or not ids.size or ids.min() < 0 or ids.max() >= num_samples:
        return None
    step = int(ids[1, 0]) - int(ids[0, 0])
    if step <= 0 or not (ids == ids[0] + step * np.arange(steps, dtype=np.int64)[:, None]).all():
        return None
    distance = workers * steps * step
    count = min(max(1, PLAN_POSITIONS // ids.size), (num_samples - 1 - int(ids.max())) // distance + 1)
    positions = ids.reshape(1, -1) + distance * np.arange(count, dtype=np.int64)[:, None]
    return positions.reshape(-1), distance, count


class StepPlan:
    """A RowPlan of the positions of a sampler's StepChunk (`sdl.loader.sampling.batches`, kept in its `prepared`): the
    batch of step k is rows [k·B, (k + 1)·B) — a rank's own positions, in any order (shuffle=True too)."""

    def __init__(self, owner: Any, rows: RowPlan, steps: np.ndarray, seed: int, epoch: int, context: Any,
                 carried: tuple) -> None:
        self.owner, self.rows, self.seed, self.epoch, self.context = owner, rows, seed, epoch, context
        self.lean = owner.lean  # the owner's sources take the lean route (lean_batch)
        self.id_lists = steps.tolist()
        self._shape = steps.shape
        self._tensors: list | None = None  # per step: (sample_ids, source, source_ids) tensors, see lean_batch
        self.carried = carried  # (seed, epoch) as the chunk's batches carry them (seed, epoch: as the mixture reads them)

    def find(self, indices: Any, seed: int, epoch: int, context: Any) -> int:
        """Row of the plan where step `indices.step` starts, or -1 when `indices` is not that step's batch as planned."""
        k = indices.step
        if self.id_lists[k] != indices or seed != self.seed or epoch != self.epoch or context is not self.context:
            return -1
        return k * len(indices)

    def lean_batch(self, indices: Any) -> GatheredBatch | None:
        """Step `indices.step`'s batch for sources of one fixed shift, flat layout and no document positions (the owner
        checks that); None when `indices` is not that step as planned. What `RowGather.planned_batch` does, less what
        it need not do again (module docstring)."""
        k = indices.step
        if not self.lean or self.id_lists[k] != indices or indices.context is not self.context \
                or (indices.seed, indices.epoch) != self.carried:
            return None
        rows, b = self.rows, len(indices)
        first = rows.sources[0]
        seq_len, shift = first.seq_len, first.shift_choices[0]
        tokens = np.empty((2, b, seq_len), dtype=first._host_dtype)
        windows = rows.lean_windows(k * b, b, seq_len + shift)
        if windows is not None:  # the common case: one fancy index of the plan's SpanView
            tokens[0] = windows[:, :seq_len]
            tokens[1] = windows[:, shift:]
        else:
            rows.gather(k * b, b, shift, tokens, None)
        if self._tensors is None:  # the chunk's id tensors at once: unbind costs ~1.9 µs a step, a copy and three
            # from_numpy ~2.8 µs. They view a copy of the plan's columns (a caller editing a batch edits no plan)
            columns = torch.from_numpy(self.rows.columns.copy()).view(3, *self._shape)
            self._tensors = list(zip(*(column.unbind(0) for column in columns)))
        tensors, self._tensors[k] = self._tensors[k], None  # each handed out once: a step asked again gets copies
        if tensors is None:
            tensors = torch.from_numpy(self.rows.columns[:, k * b:(k + 1) * b].copy())
        return GatheredBatch(sample_ids=tensors[0], source=tensors[1], source_ids=tensors[2], input_ids=torch.from_numpy(tokens[0]),
                             labels=torch.from_numpy(tokens[1]))
