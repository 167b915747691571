"""Mixture weight schedules: weights as a piecewise-constant function of the stream position, and the draws they give.

Unit: the *stream position*, the mixture's samples counted from the start of training. Position k of epoch e is
stream position e·N + k (N = num_samples; see `mixture_phase` for phases, which carry their start). A position,
unlike a step, means the same on any world size, batch size or accumulation: a boundary at step S of a run with a
constant global batch G is position S·G (plus the positions each earlier epoch's end dropped when G does not
divide N); when G changes mid-run the boundary stays at the same sample, so the step it falls on moves.

A schedule is `((position, {name: weight}), ...)`: positions > 0 and below 2**62, strictly increasing, each naming every source
with a weight >= 0 (0: the source is not drawn), at least one > 0; the mixture's `weights` hold before the first.
A stretch at one set of weights is a *piece*. Within a piece the interleave of its weights starts afresh at the
piece's first position (so every window inside a piece keeps the interleave's ±2 bound); piece-local position u
gives (source s, c), and s's draw index is base[piece][s] + c, with base the draws of every source before the
piece, computed by the interleaves' `counts`: O(pieces × sources) per stream, nothing per sample. Draw indices
run on across boundaries, so each source continues its pass exactly where it stopped.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from sdl.loader.errors import ConfigError
from sdl.loader.sampling.interleave import Interleave
from sdl.loader.sampling.pfair import PfairTable, exact_shares
from sdl.loader.sampling.state import LIMIT

Schedule = tuple[tuple[int, dict[str, float]], ...]


def is_weight(value: Any) -> bool:
    """A weight: a real number (not a bool) >= 0 that is finite as a float (an integer of 310 digits is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an integer beyond a float's range
        return False


def shown_weight(value: Any) -> str:
    """A weight as written, an integer beyond a float's range by its size (its 310+ digits would fill the message)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return f"<an integer of {len(str(abs(value)))} digits, beyond a float's range>"
    return repr(value)


def check_weights(weights: Mapping[str, Any], names: Sequence[str], what: str = "mixture weights") -> dict[str, float]:
    """One weight per source, finite and >= 0, at least one > 0: normalised to sum 1, in the sources' order."""
    if not isinstance(weights, Mapping):
        raise ConfigError(f"{what} are {weights!r}; expected a table {{source name: weight}}")
    missing, unknown = set(names) - set(weights), set(weights) - set(names)
    if missing or unknown:
        raise ConfigError(f"{what} name {sorted(map(str, weights))}, the sources are {list(names)}; "
                          f"give one weight per source (missing {sorted(missing)}, unknown {sorted(map(str, unknown))})")
    values = [weights[name] for name in names]
    if not all(map(is_weight, values)) or sum(values) <= 0:
        shown = ", ".join(f"{name!r}: {shown_weight(w)}" for name, w in zip(names, values))
        raise ConfigError(f"{what} are {{{shown}}}; expected finite numbers >= 0, at least one > 0")
    try:
        total = float(sum(values))
    except OverflowError:  # integers whose sum is beyond a float's range
        total = math.inf
    if total == math.inf:  # finite weights whose sum overflows (1e308 + 1e308): scaled by a power of two first, exactly
        shift = math.frexp(max(values))[1]
        values = [math.ldexp(w, -shift) for w in values]
        total = float(sum(values))
    return {name: float(w) / total for name, w in zip(names, values)}


def check_schedule(schedule: Any, names: Sequence[str]) -> Schedule:
    """`[(position, {name: weight}), ...]` or `{position: {name: weight}}` checked, weights normalised."""
    if schedule is None:
        return ()
    items = list(schedule.items()) if isinstance(schedule, Mapping) else schedule
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) \
            or any(not isinstance(item, Sequence) or len(item) != 2 for item in items):
        raise ConfigError(f"mixture schedule is {schedule!r}; expected [(position, {{source: weight}}), ...] "
                          "with positions counted in samples of the mixture's stream")
    out, last = [], 0
    for position, weights in items:
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or position <= last:
            raise ConfigError(f"mixture schedule position {position!r} (after {last}) is not an integer > {last}; expected "
                              "positions > 0 in increasing order (the mixture's weights hold from position 0)")
        if position >= LIMIT:  # stream positions are counted in int64 and a loader state holds them below 2**62
            raise ConfigError(f"mixture schedule position {int(position):,} is not below 2**62 ({LIMIT:,}), the largest stream "
                              "position sdl counts (a loader state holds positions below it); give a smaller position, or drop "
                              "the entry: its weights would never be reached")
        last = int(position)
        out.append((last, check_weights(weights, names, f"mixture schedule weights at position {last:,}")))
    return tuple(out)


def pieces_from(weights: dict[str, float], schedule: Schedule, position: int) -> tuple[dict[str, float], Schedule]:
    """The weights in force at stream `position` and the changes after it."""
    for start, later in schedule:
        if start <= position:
            weights = later
    return weights, tuple((start, later) for start, later in schedule if start > position)


TREE, TABLE_BEYOND_TWO = 1, 2  # interleave rules: the tree always (phases of sdl before 2026-11-29); the Pfair table
# for weights whose tree bound exceeds 2 and that are multiples of 1/D (D <= 65,536), else the tree


def interleave_of(weights: tuple[float, ...], rule: int = TABLE_BEYOND_TWO) -> Interleave | PfairTable:
    """The interleave of (stored, normalised) weights under `rule`: every count and lookup of a phase goes through here.
    The tree (`sdl.loader.sampling.interleave`) needs nothing stored and keeps ±2 for up to 4 sources, equal weights and
    most others; where its bound exceeds 2, a periodic Pfair table (`sdl.loader.sampling.pfair`) keeps ±2 for any number
    of sources when the weights are multiples of 1/D."""
    shares = None if rule == TREE else _table_shares(weights)
    return _tree(weights) if shares is None else _table(_tree(weights).weights, *shares)


@lru_cache(maxsize=256)
def _tree(weights: tuple[float, ...]) -> Interleave:
    return Interleave(weights=weights)


@lru_cache(maxsize=256)
def _table_shares(weights: tuple[float, ...]) -> tuple[int, tuple[int, ...]] | None:
    """(D, shares) of the Pfair table when the tree's bound exceeds 2 and the weights are multiples of 1/D; else None."""
    tree = _tree(weights)
    return None if tree.bound <= 2 else exact_shares(tree.weights)


@lru_cache(maxsize=16)  # a table holds up to 1.6 MB (24 bytes a position of its period); a Stream keeps its own
def _table(weights: tuple[float, ...], period: int, shares: tuple[int, ...]) -> PfairTable:
    return PfairTable(weights, period, shares)


def uses_table(weight_sets: Sequence[Mapping[str, float]]) -> bool:
    """Whether any of these weights reads differently under TABLE_BEYOND_TWO than under TREE."""
    return any(_table_shares(tuple(w.values())) is not None for w in weight_sets)


@dataclass(frozen=True, kw_only=True, slots=True)
class Stream:
    """Draws of the stream from a point on: `names`' draws from there at the schedule's weights, each from `drawn`."""

    names: tuple[str, ...]
    starts: np.ndarray  # int64 [pieces]: first position of each piece, counted from the point (starts[0] == 0)
    interleaves: tuple[Interleave | PfairTable, ...]
    bases: np.ndarray  # int64 [pieces, sources]: each source's draws before each piece (its `drawn` included)

    @classmethod
    def build(cls, weights: dict[str, float], schedule: Schedule, start: int, drawn: Mapping[str, int],
              rule: int = TABLE_BEYOND_TWO) -> Stream:
        """The stream from stream position `start`, where `weights` hold and `schedule` lists the changes after it;
        each piece interleaved under `rule` (`interleave_of`)."""
        names = tuple(weights)
        starts = np.array([0] + [position - start for position, _ in schedule], dtype=np.int64)
        assert (np.diff(starts) > 0).all() and (starts[1:] > 0).all(), "schedule changes must follow the stream's start"
        interleaves = tuple(interleave_of(tuple(float(w[n]) for n in names), rule) for w in [weights, *(w for _, w in schedule)])
        bases = np.zeros((len(starts), len(names)), dtype=np.int64)
        bases[0] = [int(drawn.get(name, 0)) for name in names]
        for p in range(1, len(starts)):
            bases[p] = bases[p - 1] + interleaves[p - 1].counts(int(starts[p] - starts[p - 1]))
        return cls(names=names, starts=starts, interleaves=interleaves, bases=bases)

    @property
    def bound(self) -> float:
        """Every window inside one piece is within this of weight × length; across a boundary, within the pieces' sum."""
        return max(interleave.bound for interleave in self.interleaves)

    def locate(self, t: Any) -> tuple[np.ndarray, np.ndarray]:
        """(source index in `names`, draw index of that source) of positions `t` (counted from the point), vectorised."""
        t = np.asarray(t, dtype=np.int64)
        piece = np.searchsorted(self.starts, t, side="right") - 1
        if len(self.starts) == 1 or (t.size and piece.min() == piece.max()):  # nearly every chunk: inside one piece
            p = int(piece.reshape(-1)[0]) if t.size else 0
            source, index = self.interleaves[p].locate(t - self.starts[p])
            return source, index + self.bases[p][source]
        source, draws = np.empty_like(t), np.empty_like(t)
        for p in np.unique(piece).tolist():
            mine = piece == p
            source[mine], index = self.interleaves[p].locate(t[mine] - self.starts[p])
            draws[mine] = index + self.bases[p][source[mine]]
        return source, draws

    def counts(self, t: int) -> np.ndarray:
        """Every source's draws (from `drawn` on) after the first `t` positions."""
        p = int(np.searchsorted(self.starts, t, side="right")) - 1
        return self.bases[p] + self.interleaves[p].counts(int(t - self.starts[p]))

    def first_exhausted(self, sizes: Sequence[int]) -> int:
        """The fewest positions after which some source has drawn `sizes[s]` in all (one pass of the first to run out)."""
        sizes = np.asarray(sizes, dtype=np.int64)
        for p, interleave in enumerate(self.interleaves):
            last = p + 1 == len(self.interleaves)
            if last or (self.bases[p + 1] >= sizes).any():
                return int(self.starts[p]) + interleave.positions_for(sizes - self.bases[p])
        raise AssertionError("unreachable: the last piece always ends the search")

    def pieces(self, t_from: int, t_to: int) -> list[tuple[int, int, int]]:
        """(piece, first, end) of the pieces over positions [t_from, t_to), clipped to it."""
        out = []
        for p in range(len(self.starts)):
            first = max(t_from, int(self.starts[p]))
            end = t_to if p + 1 == len(self.starts) else min(t_to, int(self.starts[p + 1]))
            if first < end:
                out.append((p, first, end))
        return out


def schedule_plan(stream: Stream, weights: list[dict[str, float]], sizes: dict[str, int], num_samples: int) -> list[dict]:
    """Per piece of a stream from position 0 (`from`, `to`: stream positions; the last piece to the end of the epoch it
    starts in): its weights and, per source, its draws, the passes they make and the pass the source is in at `to`."""
    out = []
    for p, first in enumerate(stream.starts.tolist()):
        end = int(stream.starts[p + 1]) if p + 1 < len(stream.starts) else (first // num_samples + 1) * num_samples
        before, after = stream.counts(first), stream.counts(end)
        out.append({"from": first, "to": end, "weights": dict(weights[p]), "sources": {
            name: {"draws": int(after[s] - before[s]), "passes": round(int(after[s] - before[s]) / sizes[name], 4),
                   "pass_at_end": int(after[s]) // sizes[name]} for s, name in enumerate(stream.names)}})
    return out
