"""The one rank-slicing rule of sdl: which samples of the remaining stream rank r takes at each step.

Micro-step s covers offsets `[s·W·B, (s+1)·W·B)` of the epoch's remaining stream (W ranks of B samples);
rank r takes the contiguous slice `[s·W·B + r·B, s·W·B + (r+1)·B)`. Every rank computes its slice from
the shared state alone, so exactly-once rests on this function and nothing else: the sampler, the
merge of ranks that stopped unevenly, and `sdl reshard-ckpt`'s per-rank plan all call it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rank_start(step: Any, rank: int, world_size: int, batch_size: int) -> Any:
    """Offset in the remaining stream of `rank`'s first sample at micro-step `step` (an int, or an array of steps)."""
    return step * (world_size * batch_size) + rank * batch_size


def rank_offsets(steps: Any, rank: int, world_size: int, batch_size: int) -> np.ndarray:
    """Offsets in the remaining stream of `rank`'s samples at micro-steps `steps`: shape [len(steps), batch_size]."""
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    return rank_start(steps[:, None], rank, world_size, batch_size) + np.arange(batch_size, dtype=np.int64)


def rank_real_samples(remaining: int, steps: int, rank: int, world_size: int, batch_size: int) -> int:
    """How many of `rank`'s samples over `steps` micro-steps are real (below `remaining`), the rest being padding.
    In Python integers: a plan for any batch size (`sdl reshard-ckpt --batch-size`) allocates nothing."""
    if steps <= 0:
        return 0
    last = rank_start(steps - 1, rank, world_size, batch_size)
    return (steps - 1) * batch_size + min(batch_size, max(0, remaining - last))
