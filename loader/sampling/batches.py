"""What the sampler hands out for each step: a SampleBatch (the rank's sample ids and the step's identity), and the
StepChunk of consecutive steps whose order was computed in one lookup."""

from __future__ import annotations

from typing import Any

import numpy as np


class StepChunk:
    """The sample ids of a rank's consecutive steps computed in one lookup (`ids`, [steps, B] int64), shared
    by their SampleBatches: a dataset may prepare all the steps at once (TokenWindows locates their windows in one
    vectorised call) and keep what it prepared in `prepared`, which lives as long as the chunk's batches."""

    __slots__ = ("ids", "prepared")

    def __init__(self, ids: np.ndarray) -> None:
        self.ids, self.prepared = ids, None


class SampleBatch(list):
    """A rank's sample ids for one step, carrying the step's identity (for per-batch randomness); from the sampler also
    its `chunk` (a StepChunk, whose row `step` holds the same ids; not sent to DataLoader workers)."""

    __slots__ = ("seed", "epoch", "position", "num_padded", "context", "chunk", "step")

    def __init__(self, ids: Any, *, seed: int, epoch: int, position: int, num_padded: int = 0, context: Any = None,
                 chunk: StepChunk | None = None, step: int = 0) -> None:
        list.__init__(self, ids)
        self.seed = seed
        self.epoch = epoch
        self.position = position
        self.num_padded = num_padded
        self.context = context  # the dataset's stream context from the state (a Mixture's phase), else None
        self.chunk = chunk
        self.step = step

    def __reduce__(self):  # keep the attributes when sent to a DataLoader worker
        return (_rebuild_batch, (list(self), self.seed, self.epoch, self.position, self.num_padded, self.context))


def _rebuild_batch(ids: list, seed: int, epoch: int, position: int, num_padded: int, context: Any = None) -> SampleBatch:
    return SampleBatch(ids, seed=seed, epoch=epoch, position=position, num_padded=num_padded, context=context)


def share_chunk(batches: list[Any]) -> None:
    """Give SampleBatches of one length, without a chunk (e.g. a DataLoader worker's task, received pickled), one
    StepChunk of their ids, so that a dataset locates them at once as it does the sampler's own chunks."""
    if len(batches) < 2 or not all(type(batch) is SampleBatch and batch.chunk is None for batch in batches):
        return
    size = len(batches[0])
    if size == 0 or any(len(batch) != size for batch in batches):
        return
    chunk = StepChunk(np.array(batches, dtype=np.int64))
    for step, batch in enumerate(batches):
        batch.chunk, batch.step = chunk, step
