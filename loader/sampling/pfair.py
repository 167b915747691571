"""A periodic Pfair schedule as a mixture interleave: within ±2 of weight × K over every window, any number of sources.

When every weight is a multiple of 1/D for some period D <= `MAX_PERIOD` (weights w_s = p_s / D, integers p_s
summing to D: any decimal weights of up to 4 places, any integer ratios summing to at most 65,536), the
positions of one period are scheduled once, then repeat. Draw j >= 1 of source s (its j-th position) must
fall in its Pfair window [floor((j - 1)·D / p_s), ceil(j·D / p_s)); earliest-deadline-first over the draws
whose window has opened fills every position and meets every window (EDF is optimal for unit jobs with
integer release times on one machine, and Pfair windows of weights summing to 1 are feasible: Baruah et
al. 1996). A schedule meeting the windows keeps each source's lag w_s·t − c_s(t) strictly inside (−1, 1)
for every prefix t, so over any K consecutive positions each count differs from w_s·K by less than 2. At t = D
every lag is 0 (an integer inside (−1, 1)), so period after period continues the same schedule.

The table: the source of each position of the period and its draw index there (rank), and each source's
positions in the period; a lookup is one divmod and two takes, `counts` a binary search per source.
Building it costs ~1 µs per position of the period (0.05 s at D = 65,536, measured), once per weights per process.
"""

from __future__ import annotations

import heapq
import math
from fractions import Fraction
from typing import Any

import numpy as np

MAX_PERIOD = 1 << 16  # the longest period scheduled (positions), and the largest denominator of the weights
EXACT = 1e-12  # a weight counts as p / D when it is within this of it


def exact_shares(weights: tuple[float, ...]) -> tuple[int, tuple[int, ...]] | None:
    """(D, (p_s)) with weights[s] == p_s / D (within EXACT), sum p_s == D <= MAX_PERIOD; None when there is none."""
    fractions = [Fraction(w).limit_denominator(MAX_PERIOD) for w in weights]
    period = math.lcm(*(f.denominator for f in fractions))
    if period > MAX_PERIOD:
        return None
    shares = tuple(int(f * period) for f in fractions)
    if sum(shares) != period or any(abs(p / period - w) > EXACT for p, w in zip(shares, weights)):
        return None
    return period, shares


def schedule(period: int, shares: tuple[int, ...]) -> np.ndarray:
    """The source of each position of one period: EDF over the Pfair windows (module docstring)."""
    order = np.empty(period, dtype=np.int64)
    next_draw = [1] * len(shares)  # the draw each source makes next (1-based)
    waiting = [(0, s) for s, p in enumerate(shares) if p > 0]  # (window opens, source): every first window opens at 0
    ready: list[tuple[int, int]] = []  # (window closes, source), its window open
    heapq.heapify(waiting)
    for t in range(period):
        while waiting and waiting[0][0] <= t:
            s = heapq.heappop(waiting)[1]
            heapq.heappush(ready, (-(-next_draw[s] * period // shares[s]), s))
        closes, s = heapq.heappop(ready)
        assert closes > t, "a Pfair window was missed"  # cannot happen for shares summing to the period
        order[t] = s
        next_draw[s] += 1
        if next_draw[s] <= shares[s]:
            heapq.heappush(waiting, ((next_draw[s] - 1) * period // shares[s], s))
    return order


class PfairTable:
    """The interleave of weights that are multiples of 1/period (`exact_shares`): the API of `Interleave`."""

    bound = 2.0  # window counts stay strictly within 2 of weight × length

    def __init__(self, weights: tuple[float, ...], period: int, shares: tuple[int, ...]) -> None:
        self.weights, self.period = weights, period
        self.shares = np.asarray(shares, dtype=np.int64)
        self.order = schedule(period, shares)
        self.rank = np.empty(period, dtype=np.int64)  # draw index of each position within the period
        self.slots = []  # each source's positions in the period (sorted)
        for s in range(len(shares)):
            mine = np.flatnonzero(self.order == s)
            self.rank[mine] = np.arange(len(mine))
            self.slots.append(mine)

    def locate(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """(source, draw index within that source) of stream positions (int64 arrays, any shape)."""
        periods, offsets = np.divmod(np.asarray(positions, dtype=np.int64), self.period)
        source = self.order[offsets]
        return source, periods * self.shares[source] + self.rank[offsets]

    def counts(self, t: int) -> np.ndarray:
        """Draws of every source among the first `t` positions (int64 [num_sources]); they sum to t."""
        periods, offset = divmod(int(t), self.period)
        within = np.array([np.searchsorted(slots, offset) for slots in self.slots], dtype=np.int64)
        return periods * self.shares + within

    def positions_for(self, draws: Any) -> int:
        """The fewest positions t at which some source s has drawn `draws[s]` (sources of weight 0 ignored)."""
        first = []
        for s, wanted in enumerate(np.asarray(draws, dtype=np.int64).tolist()):
            if self.shares[s] == 0:
                continue
            if wanted <= 0:
                return 0
            periods, j = divmod(wanted - 1, int(self.shares[s]))  # the wanted-th draw: draw j of a later period
            first.append(periods * self.period + int(self.slots[s][j]) + 1)
        return min(first)
