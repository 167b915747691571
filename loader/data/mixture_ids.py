"""A mixture's sources' own shuffled orders: the sample id of each source's draw d, looked up many at a time.

Draw d of source s (of n samples) is offset d % n of its pass d // n, and its sample is
`Order(n, seed, epoch=pass, key=<name, identity of s>)[offset]`: every id once per pass, a new permutation every
pass. A Feistel lookup costs ~15 rounds of numpy calls whatever its count, so ids are drawn a block at a time and
kept: a whole pass for a source of at most `pass_block` samples (the order then tabulates its Feistel domain once:
`sdl.loader.sampling.order`), else blocks of `id_block` offsets. A plan's draws of a source nearly always lie in
one block: they are then one subtraction and one take.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from sdl.loader.sampling.order import Order

ID_BLOCK = 4096  # a large source's ids drawn per Feistel lookup: its cycle-walk costs ~15 rounds of numpy calls
PASS_BLOCK = 65536  # a source of at most this many samples draws a whole pass per lookup (sampling.order: tabulated)


class SourceOrders:
    """The ids of draws of sources of `sizes` samples, each source shuffled per pass under its `keys` string; the
    last few blocks of ids are kept (4 per source)."""

    def __init__(self, sizes: Sequence[int], keys: Sequence[str], pass_block: int = PASS_BLOCK, id_block: int = ID_BLOCK) -> None:
        self.sizes, self.keys = tuple(int(n) for n in sizes), tuple(keys)
        self._args = (self.sizes, self.keys, pass_block, id_block)
        self.block_sizes = tuple(n if n <= pass_block else id_block for n in self.sizes)  # a whole pass, or a block
        self._blocks: OrderedDict = OrderedDict()

    def __reduce__(self) -> tuple:  # a copy (a worker's) starts with no blocks
        return (SourceOrders, self._args)

    def ids(self, s: int, seed: int, draws: np.ndarray) -> np.ndarray:
        """Source s's sample ids at its draw indices `draws` (int64 >= 0, any order)."""
        if not draws.size:
            return np.empty(0, dtype=np.int64)
        n, size = self.sizes[s], self.block_sizes[s]
        low, high = int(draws.min()), int(draws.max())
        p, offset = divmod(low, n)
        if high < p * n + n and offset // size == (high - p * n) // size:  # nearly every plan: one block of one pass
            first = p * n + offset // size * size
            return self._block(s, seed, p, offset // size)[draws - first]
        passes, offsets = np.divmod(draws, n)
        blocks_per_pass = -(-n // size)
        blocks = passes * blocks_per_pass + offsets // size
        out = np.empty_like(draws)
        for block in range(int(blocks.min()), int(blocks.max()) + 1) if high - low < 8 * size else np.unique(blocks).tolist():
            mine = blocks == block
            if mine.any():
                out[mine] = self._block(s, seed, *divmod(block, blocks_per_pass))[offsets[mine] % size]
        return out

    def _block(self, s: int, seed: int, p: int, block: int) -> np.ndarray:
        """Source s's ids at offsets [block·size, (block + 1)·size) of its pass p (fewer in the pass's last)."""
        ids = self._blocks.get((s, seed, p, block))
        if ids is None:
            n, size = self.sizes[s], self.block_sizes[s]
            order = Order(num_samples=n, seed=seed, epoch=p, key=self.keys[s])
            ids = self._blocks[(s, seed, p, block)] = order[np.arange(block * size, min((block + 1) * size, n), dtype=np.int64)]
            while len(self._blocks) > 4 * len(self.sizes):
                self._blocks.popitem(last=False)
        return ids
