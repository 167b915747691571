"""Merging per-rank loader states and rewriting a state for a new world size or batch size.

A state is topology-free, so "resharding" is merging: the new world reads the same global cursor.
Ranks that saved at the same step hold identical consumed sets and merge trivially. Ranks that
stopped at different steps (a crash, a preemption mid-step) each saved the state "as if every rank
were at my step"; with every rank's state, world size W and batch size B, the exact consumed set is
the least advanced state plus, for each rank r that ran d_r steps further, its own slices (g < d_r)
of the remaining stream, by the one rule in `sdl.loader.sampling.slicing`. The merged state carries those as
consumed ranges beyond its cursor, so the resumed stream delivers every remaining sample exactly once.
A rank that ran the epoch's last step saved the next epoch at cursor 0: while other ranks are still in
that epoch, it counts as having run every step of it (its slices of all the remaining steps).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.sampling.sampler import EpochPlan, plan_rest
from sdl.loader.sampling.slicing import rank_offsets
from sdl.loader.sampling.state import LoaderState


def _runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Sorted positions -> maximal [start, end) runs."""
    if positions.size == 0:
        return []
    positions = np.unique(positions)
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [positions.size]))
    return [(int(positions[a]), int(positions[b - 1]) + 1) for a, b in zip(starts, ends)]


def _check_same_stream(states: Sequence[LoaderState]) -> None:
    first = states[0]
    for other in states[1:]:
        fields = first.stream_differences(other)
        if fields:
            found = ", ".join(f"{k}: {getattr(first, k)!r} vs {getattr(other, k)!r}" for k in fields)
            raise CheckpointError(f"the loader states disagree ({found}): they come from different datasets or runs; merge only the states of one run")


def _check_epochs(states: Sequence[LoaderState]) -> int:
    """The epoch to merge in: the lowest; a rank one epoch ahead must stand at its very start (it finished the lowest)."""
    low = min(s.epoch for s in states)
    for s in states:
        if s.epoch > low + 1 or (s.epoch == low + 1 and s.num_consumed):
            raise CheckpointError(
                f"the loader states are in different epochs ({low} and {s.epoch}, at sample {s.num_consumed:,}): a rank ran "
                f"past the end of epoch {low} while another was still in it; resume from a checkpoint where every rank "
                f"is in the same epoch or at most at the start of the next"
            )
    return low


def merge_states(states: Sequence[LoaderState | dict]) -> LoaderState:
    """One state whose consumed set is exactly the union of what the given per-rank states consumed."""
    states = [LoaderState.from_dict(s) for s in states]
    if not states:
        raise CheckpointError("no loader states to merge")
    _check_same_stream(states)
    _check_epochs(states)
    if len({s.global_batch_size for s in states}) > 1:  # e.g. a run's rank files beside a state rewritten for another G
        raise CheckpointError(f"the ranks' states were saved with different global_batch_size "
                              f"({sorted({str(s.global_batch_size) for s in states})}); pass the per-rank files of one run")
    if all((s.epoch, s.cursor, s.consumed) == (states[0].epoch, states[0].cursor, states[0].consumed) for s in states):
        return replace(states[0], rank=None)
    return _merge_uneven(states)


def _merge_uneven(states: list[LoaderState]) -> LoaderState:
    world_size, batch_size = states[0].world_size, states[0].batch_size
    if any((s.world_size, s.batch_size) != (world_size, batch_size) for s in states):
        raise CheckpointError("the ranks stopped at different steps and disagree on world_size/batch_size; cannot merge them exactly")
    by_rank = {s.rank: s for s in states}
    missing = sorted(set(range(world_size)) - set(by_rank))
    if missing:
        raise CheckpointError(
            f"the ranks stopped at different steps, so every rank's state is needed to merge exactly; "
            f"missing rank(s) {missing} of world size {world_size}: pass all per-rank files"
        )
    if len(by_rank) != len(states):
        twice = sorted(rank for rank, count in Counter(s.rank for s in states).items() if count > 1)
        raise CheckpointError(f"rank(s) {twice} given twice, at different steps, among the states of a world of {world_size}: "
                              "pass each rank's file of one checkpoint once")
    global_batch, accumulated = world_size * batch_size, states[0].global_batch_size  # a micro-step's samples; G
    low = _check_epochs(states)
    base = max((s for s in states if s.epoch == low), key=lambda s: s.remaining - s.padded)  # the least advanced
    epoch_steps = plan_rest(base, global_batch, accumulated, base.drop_last).steps  # the epoch's whole global steps
    extra: list[np.ndarray] = []
    for rank, state in by_rank.items():
        if state.epoch > low:  # ran the last step of the epoch: every remaining step, then moved on
            ahead, expected = epoch_steps, base.next_epoch()
        else:  # micro-steps ahead: the slots consumed since the base, padding included
            ahead, odd = divmod(base.remaining - state.remaining + state.padded - base.padded, global_batch)
            expected = None if odd or ahead < 0 else base.after_slots(ahead * global_batch)
        if expected != replace(state, rank=base.rank, world_size=base.world_size):
            raise CheckpointError(
                f"rank {rank}'s state is not a whole number of global steps ahead of rank {base.rank}'s: "
                "the states do not come from one run with this world size and batch size"
            )
        j = rank_offsets(np.arange(ahead), rank, world_size, batch_size).reshape(-1)
        j = j[j < base.remaining]  # padding past the end of the epoch consumed nothing new
        extra.append(base.position_of(j))
    positions = np.concatenate(extra) if extra else np.zeros(0, dtype=np.int64)
    return replace(base.with_consumed(_runs(positions)), rank=None)


def reshard_state(state: LoaderState | dict, world_size: int, batch_size: int | None = None,
                  global_batch_size: int | None = None) -> LoaderState:
    """The state for a new world size (and per-rank batch size, and global batch size with gradient accumulation;
    None: as saved): the same consumed set, the new topology recorded. Padding of the epoch's last global step already
    delivered stays counted only under the same global batch size, as a sampler counts it (`padded_by`)."""
    state = LoaderState.from_dict(state)
    batch_size = state.batch_size if batch_size is None else batch_size
    accumulated = state.global_batch_size if global_batch_size is None else global_batch_size
    targets = {"world_size": world_size, "batch_size": batch_size} | ({} if global_batch_size is None else
                                                                      {"global_batch_size": global_batch_size})
    for name, value in targets.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"target {name} is {value!r}, expected a positive integer")
    return replace(state, world_size=world_size, batch_size=batch_size, rank=None, global_batch_size=accumulated,
                   padded=state.padded_by(accumulated))


def plan_for(state: LoaderState | dict, world_size: int, batch_size: int, drop_last: bool | None = None,
             global_batch_size: int | None = None) -> EpochPlan:
    """What the rest of the state's epoch holds for `world_size` ranks of `batch_size` (per rank: steps × batch_size).

    With `global_batch_size` (gradient accumulation, as the sampler's) the epoch is whole global steps from its start,
    so the plan counts the micro-steps left in them. As a sampler's, the plan takes G from the caller, not from the
    state (which records the saver's G when it accumulated): `sdl reshard-ckpt` passes the recorded one by default."""
    state = LoaderState.from_dict(state)
    drop_last = state.drop_last if drop_last is None else drop_last
    if global_batch_size is not None and (global_batch_size <= 0 or global_batch_size % (world_size * batch_size)):
        raise ConfigError(f"global_batch_size is {global_batch_size}, expected a positive multiple of world_size × batch_size "
                          f"= {world_size * batch_size}; choose a batch size and world size that divide it")
    return plan_rest(state, world_size * batch_size, global_batch_size, drop_last)
