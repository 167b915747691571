"""ElasticSampler: the batch sampler that cuts an epoch's order into global steps and gives each rank its slice.

Micro-step s (counted from the state the sampler started from) covers the remaining positions
`[s·W·B, (s+1)·W·B)` of the epoch's order; rank r takes its contiguous slice by the one rule in
`sdl.loader.sampling.slicing`. Every rank computes its slice from the shared state alone, with no
communication, and all ranks agree on the number of steps. Without `global_batch_size` a global step
is one micro-step (G = W·B) and the tail that does not fill one is dropped (`drop_last=True`) or
padded by wrapping around to the start of the epoch's order (`drop_last=False`). With
`global_batch_size=G` (a multiple of W·B) a global step is A = G/(W·B) consecutive micro-steps (gradient
accumulation), and the epoch's end is planned in whole global steps of G counted from the epoch's start:
any topology with the same G cuts the epoch into the same global batches, resumed mid-accumulation or
not. `plan()` reports the rest of the epoch; `len()` the micro-steps of a whole epoch.

`state_dict()` is the state after the batches this sampler has *produced* (what torchdata's StatefulDataLoader
snapshots per batch). A DataLoader with workers produces ahead of the loop: pass `consumed_steps=` (or use
`make_loader`, which counts the batches it hands over, and to which a sampler it owns forwards `set_epoch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.sampling.batches import SampleBatch, StepChunk
from sdl.loader.sampling.order import MODES, Order
from sdl.loader.sampling.slicing import rank_offsets
from sdl.loader.sampling.state import STREAM_KEYS, LoaderState, check_arguments

# The order of this many samples is computed in one vectorised call: a lookup costs ~100 µs of
# numpy call overhead whether it is for 16 ids or 4,096 (measured), so batches share it.
STEPS_PER_LOOKUP_SAMPLES = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class EpochPlan:
    """What the rest of an epoch holds for a given topology."""

    steps: int
    samples: int
    dropped: int
    padded: int
    sources: dict | None = None  # a Mixture's per-source draws and passes (Mixture.source_plan)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples": self.samples, "dropped": self.dropped, "padded": self.padded} | \
            ({} if self.sources is None else {"sources": self.sources})


def plan_epoch(remaining: int, global_batch_size: int, drop_last: bool) -> EpochPlan:
    """Steps left, samples they deliver, and the tail dropped or padded, for `remaining` samples."""
    if global_batch_size <= 0:
        raise ConfigError(f"global batch size is {global_batch_size}, expected > 0")
    full, tail = divmod(remaining, global_batch_size)
    if drop_last or tail == 0:
        return EpochPlan(steps=full, samples=full * global_batch_size, dropped=tail, padded=0)
    return EpochPlan(steps=full + 1, samples=remaining, dropped=0, padded=global_batch_size - tail)


def plan_rest(state: LoaderState, micro_batch: int, global_batch_size: int | None, drop_last: bool) -> EpochPlan:
    """The rest of `state`'s epoch in micro-steps of `micro_batch` (W·B) samples.

    `global_batch_size=None`: steps of W·B from wherever the state stands (a state saved on any topology).
    Else the epoch is whole global steps of G from its start (N//G of them, or one more padded one); the steps
    left are those slots not yet consumed: a state stands on a micro-step boundary of this topology (or is merged).
    """
    if global_batch_size is None:
        return plan_epoch(state.remaining, micro_batch, drop_last)
    whole = plan_epoch(state.num_samples, global_batch_size, drop_last)
    slots = whole.steps * global_batch_size - state.num_consumed - state.padded_by(global_batch_size)  # positions left
    if slots <= 0:
        return EpochPlan(steps=0, samples=0, dropped=state.remaining, padded=0)
    if slots % micro_batch and state.remaining and not state.consumed:
        raise ConfigError(
            f"the loader state stands {state.num_consumed:,} samples into its epoch, not at a micro-step boundary of "
            f"world_size × batch_size = {micro_batch} (global_batch_size={global_batch_size}); resume with a world_size × "
            f"batch_size that divides {state.num_consumed % global_batch_size or global_batch_size}, or the topology it was saved on")
    # Merged from ranks stopped apart (slices consumed out of order): the last micro-step is topped up from the tail
    steps = -(-slots // micro_batch) if state.consumed else slots // micro_batch  # the epoch drops, else padded
    samples = min(steps * micro_batch, state.remaining)
    return EpochPlan(steps=steps, samples=samples, dropped=state.remaining - samples, padded=steps * micro_batch - samples)


def check_fits(num_samples: int, global_batch_size: int, drop_last: bool, made_of: str) -> None:
    """Refuse a global batch larger than the whole dataset under drop_last: every epoch would deliver no batch."""
    if drop_last and num_samples < global_batch_size:
        raise ConfigError(
            f"a global batch of {global_batch_size:,} samples ({made_of}) is larger than the dataset's {num_samples:,} "
            f"samples, so with drop_last=True no batch would ever be delivered; use a smaller batch_size or fewer ranks, "
            f"drop_last=False (the last batch is padded), or more data"
        )


def shuffle_mode(shuffle: bool | str) -> str:
    mode = {True: "global", False: "none"}.get(shuffle, shuffle) if isinstance(shuffle, bool) else shuffle
    if mode not in MODES:
        raise ConfigError(f"shuffle is {shuffle!r}, expected True, False or one of {', '.join(MODES)}")
    return mode


class ElasticSampler:
    """Batch sampler over `num_samples` samples: an exactly-once, resumable, topology-free epoch order."""

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool | str = True,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True, fingerprint: str = "",
                 block_size: int = 1024, window_blocks: int = 16, dataset_info: dict | None = None,
                 global_batch_size: int | None = None, adapt: Callable[[LoaderState], LoaderState] | None = None) -> None:
        check_arguments(num_samples=num_samples, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                        block_size=block_size, window_blocks=window_blocks, drop_last=drop_last)
        if rank >= world_size:
            raise ConfigError(f"need 0 <= rank < world_size; found rank={rank}, world_size={world_size}")
        if global_batch_size is not None and (isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int)
                                              or global_batch_size <= 0 or global_batch_size % (world_size * batch_size)):
            raise ConfigError(f"global_batch_size is {global_batch_size!r}, expected a positive multiple of world_size × batch_size = "
                              f"{world_size} × {batch_size} = {world_size * batch_size} (each global step is that many micro-steps)")
        self.accumulate = None if global_batch_size is None else global_batch_size // (world_size * batch_size)
        self.batch_size, self.rank, self.world_size, self.drop_last = batch_size, rank, world_size, drop_last
        accumulated = f" × {self.accumulate} micro-steps" if self.accumulate else ""
        check_fits(num_samples, self.global_batch_size, drop_last, f"{world_size} rank(s) × batch_size {batch_size}{accumulated}")
        self.accumulated = None if self.accumulate is None else self.global_batch_size  # G when accumulating, as states record it
        self._base = LoaderState(
            fingerprint=fingerprint, num_samples=num_samples, seed=seed, shuffle=shuffle_mode(shuffle),
            block_size=block_size, window_blocks=window_blocks, drop_last=drop_last,
            world_size=world_size, batch_size=batch_size, rank=rank, dataset=dict(dataset_info or {}),
        )
        self._produced, self._finished, self._adapt = 0, False, adapt  # adapt: a dataset's translation of a saved state
        self.owner_set_epoch: Callable[[], Any] | None = None  # the WeakMethod of the loader owning it (make_loader)

    @classmethod
    def for_dataset(cls, dataset: Any, batch_size: int, **kwargs: Any) -> ElasticSampler:
        """A sampler over `dataset` (its length, identity and description), e.g. for torchdata's StatefulDataLoader."""
        info = dataset.describe() if hasattr(dataset, "describe") else {}
        return cls(len(dataset), batch_size, fingerprint=getattr(dataset, "identity", ""), dataset_info=info,
                   adapt=getattr(dataset, "adapt_state", None), **kwargs)

    @property
    def micro_batch_size(self) -> int:
        """Samples of one micro-step over all ranks: W·B."""
        return self.world_size * self.batch_size

    @property
    def global_batch_size(self) -> int:
        """Samples of one global (optimizer) step: W·B × the micro-steps accumulated."""
        return self.micro_batch_size * (self.accumulate or 1)

    @property
    def accumulation_steps(self) -> int:
        return self.accumulate or 1

    def plan_from(self, state: LoaderState) -> EpochPlan:
        """The rest of `state`'s epoch for this sampler's topology (steps are micro-steps)."""
        return plan_rest(state, self.micro_batch_size, self.accumulated, self.drop_last)

    def plan(self) -> EpochPlan:
        """The rest of the current epoch, from the state this sampler starts (or resumed) from."""
        return self.plan_from(self._base)

    def __len__(self) -> int:
        """Micro-steps of one whole epoch on this rank, wherever the cursor stands (what frameworks read as epoch length)."""
        return self.plan_from(self._base.next_epoch(self._base.epoch)).steps

    def order(self) -> Order:
        s = self._base
        return Order(num_samples=s.num_samples, seed=s.seed, epoch=s.epoch, key=s.fingerprint, mode=s.shuffle,
                     block_size=s.block_size, window_blocks=s.window_blocks)

    def _steps(self, first: int, count: int, rank: int, order: Order) -> list[SampleBatch]:
        """The batches of `rank` for steps [first, first + count): one vectorised order lookup for all of them."""
        base, G = self._base, self.micro_batch_size
        steps = np.arange(first, first + count, dtype=np.int64)
        ids_array, padded = self._step_ids(steps, rank, order)
        chunk = StepChunk(np.ascontiguousarray(ids_array, dtype=np.int64))
        ids, remaining = chunk.ids.tolist(), base.remaining
        num_padded = [0] * count if padded is None else padded.sum(axis=1).tolist()
        if self.accumulate is None:  # a step's identity (for per-batch randomness): where it starts in the order
            live = steps * G < remaining
            starts = np.full(count, base.num_samples, dtype=np.int64)
            starts[live] = base.position_of(steps[live] * G)
        else:  # every micro-step of a global step shares the global step's: its first slot of the epoch
            into_epoch = base.num_consumed + steps * G
            starts = into_epoch - into_epoch % self.global_batch_size
        seed, epoch, context, starts = base.seed, base.epoch, base.dataset.get("context"), starts.tolist()
        return [SampleBatch(ids[k], seed=seed, epoch=epoch, position=starts[k], num_padded=num_padded[k], context=context,
                            chunk=chunk, step=k) for k in range(count)]

    def _step_ids(self, steps: np.ndarray, rank: int, order: Order) -> tuple[np.ndarray, np.ndarray]:
        """[len(steps), B] sample ids of `rank` at `steps`, and which of them pad the epoch's tail (None: none does)."""
        base, B = self._base, self.batch_size
        j = rank_offsets(steps, rank, self.world_size, B).reshape(-1)
        remaining = self.plan().samples  # of base.remaining: what the epoch's (global) steps hold; the rest pads
        if not len(j) or j[-1] < remaining:  # j ascends: nothing padded (every chunk but an epoch's last); no masks
            return order[base.position_of(j)].reshape(len(steps), B), None
        padded = j >= remaining
        positions = np.empty_like(j)
        positions[~padded] = base.position_of(j[~padded])
        done = base.padded_by(self.accumulated)  # padding delivered already
        positions[padded] = (j[padded] - remaining + done) % max(base.num_samples, 1)  # wrap to the start of the order
        return order[positions].reshape(len(steps), B), padded.reshape(len(steps), B)

    def id_chunks(self) -> Iterator[np.ndarray]:
        """The sample ids `__iter__` would yield from the state this sampler starts from, as [steps, B] arrays of
        consecutive steps (no batch object per step: the storage prefetcher reads hundreds of steps at once)."""
        order, steps = self.order(), self.plan().steps
        chunk = max(1, STEPS_PER_LOOKUP_SAMPLES // self.batch_size)
        for first in range(0, steps, chunk):
            yield self._step_ids(np.arange(first, min(first + chunk, steps), dtype=np.int64), self.rank, order)[0]

    def __iter__(self) -> Iterator[SampleBatch]:
        """The rest of the current epoch; after a finished iteration, the next epoch."""
        if self._produced or self._finished:
            self._base = self.state(self._produced)
        self._produced, self._finished = 0, False
        order, steps = self.order(), self.plan().steps
        chunk = max(1, STEPS_PER_LOOKUP_SAMPLES // self.batch_size)
        for first in range(0, steps, chunk):
            for batch in self._steps(first, min(chunk, steps - first), self.rank, order):
                self._produced += 1
                yield batch
        self._finished = True

    # Step: state.
    def state(self, consumed_steps: int | None = None) -> LoaderState:
        """The LoaderState after `consumed_steps` steps (default: the steps produced) since the last start."""
        return self.state_after(self._base, self._produced if consumed_steps is None else consumed_steps)

    def state_after(self, start: LoaderState, steps: int) -> LoaderState:
        """The state `steps` (micro-)steps of this topology after `start` (a pure function; nothing changes here)."""
        plan = self.plan_from(start)
        if not 0 <= steps <= plan.steps:
            raise ValueError(f"consumed_steps={steps}, expected 0..{plan.steps}")
        G = self.accumulated
        info = {"world_size": self.world_size, "batch_size": self.batch_size, "rank": self.rank, "drop_last": self.drop_last,
                "global_batch_size": G}
        if steps == plan.steps:
            return replace(start.next_epoch(), **info)  # the epoch is over (its tail dropped or padded)
        start = replace(start, padded=start.padded_by(G), global_batch_size=G)  # past the real samples: padding, counted
        return replace(start.after_slots(steps * self.micro_batch_size), **info)

    def state_dict(self, consumed_steps: int | None = None) -> dict[str, Any]:
        return self.state(consumed_steps).to_dict()

    def load_state_dict(self, state: dict[str, Any] | LoaderState) -> None:
        """Resume from a state saved on any world size, batch size or worker count."""
        state = LoaderState.from_dict(state)
        if self._adapt is not None:
            state = self._adapt(state)
        check_compatible(state, self._base)
        self.plan_from(state)  # with a global_batch_size: refuse here a state off this topology's micro-steps
        context = {"context": state.dataset["context"]} if "context" in state.dataset else {}
        self._base = replace(state, dataset={**(self._base.dataset or state.dataset), **context})
        self._produced, self._finished = 0, False

    def set_epoch(self, epoch: int, skip_rest: bool = False) -> None:
        """Continue the epoch in progress when `epoch` is it; start `epoch` when the current one has not begun.
        Moving to another epoch while the current one is part-way raises, unless `skip_rest=True` (its rest is dropped).
        A sampler a loader owns is moved by it (a host such as Lightning calls `loader.sampler.set_epoch`)."""
        if (owner := self.owner_set_epoch and self.owner_set_epoch()) is not None:  # a weak method: no cycle to collect
            return owner(epoch, skip_rest)
        # loaded as a loader loads it: the dataset's adapt_state sees it (a Mixture refuses an epoch before its phase)
        self.load_state_dict(move_to_epoch(self.state(), epoch, skip_rest, self.plan_from(self.state()).steps))


def move_to_epoch(current: LoaderState, epoch: int, skip_rest: bool, steps_left: int) -> LoaderState:
    """The state `set_epoch(epoch)` leads to from `current` (the rule every set_epoch follows)."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ConfigError(f"set_epoch({epoch!r}): expected an epoch number >= 0")
    if not isinstance(skip_rest, bool):  # "no" is truthy: it would drop the rest of the epoch
        raise ConfigError(f"set_epoch(skip_rest={skip_rest!r}): expected True or False")
    if epoch == current.epoch:
        return current
    if current.num_consumed and steps_left and not skip_rest:
        raise ConfigError(
            f"set_epoch({epoch}) while epoch {current.epoch} is in progress ({current.num_consumed:,} of "
            f"{current.num_samples:,} samples delivered, {steps_left:,} steps left): iterate the loader to finish epoch "
            f"{current.epoch} (set_epoch({current.epoch}) continues it), or call set_epoch({epoch}, skip_rest=True) to drop its rest "
            "(from a training host: its epoch ended before the loader's, e.g. Lightning's limit_train_batches, or it resumed "
            "a checkpoint without restoring the loader's state)")
    return current.next_epoch(int(epoch))


def check_compatible(state: LoaderState, expected: LoaderState) -> None:
    """Refuse a state that belongs to another dataset, sample definition, seed or shuffle."""
    if state.fingerprint != expected.fingerprint or state.num_samples != expected.num_samples:
        saved = state.dataset or {}
        here = expected.dataset or {}
        diffs = [f"{k}: saved {saved.get(k)!r}, here {here.get(k)!r}" for k in sorted(set(saved) | set(here))
                 if saved.get(k) != here.get(k) and k != "path"]
        detail = "; ".join(diffs) if diffs else f"fingerprint {state.fingerprint} vs {expected.fingerprint}"
        raise CheckpointError(
            f"the loader state belongs to another dataset ({state.num_samples:,} samples, this one has "
            f"{expected.num_samples:,}; {detail}); load it with the dataset and sample settings it was saved with"
        )
    for name in STREAM_KEYS[2:]:
        if getattr(state, name) != getattr(expected, name):
            raise CheckpointError(
                f"the loader state was saved with {name}={getattr(state, name)!r}, this loader has "
                f"{name}={getattr(expected, name)!r}; construct the loader with {name}={getattr(state, name)!r} to resume it"
            )
