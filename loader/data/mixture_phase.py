"""Where every source of a mixture stands: the current phase (weights, schedule, start, per-source draws), and changes.

A mixture is one endless stream; epoch e of the sampler covers its positions [e·N, (e+1)·N). A
*phase* is a stretch of that stream drawn at one set of weights, or one weight schedule
(`sdl.loader.data.mixture_schedule`). It is stored in the loader state's `dataset["context"]` (so it travels
with every checkpoint and every batch), O(number of sources × schedule changes):

    {"mixture": 1, "epoch": 3, "position": 5120, "start": 125120, "num_samples": 40000,
     "weights": {"web": 0.75, "code": 0.25}, "sources": {"web": "<identity>", "code": "<identity>"},
     "drawn": {"web": 91234, "code": 30411}}

Position k of epoch e is draw t = (e - epoch)·N + (k - position) of the phase, at stream position start + t
(`start`: the stream position where the phase began, the samples of the mixture before it; absent in states
of sdl before schedules: epoch·N + position). The phase's stream (its weights, then the changes of
`"schedule": [[stream position, {weights}], ...]` after its start), interleaved under the phase's rule, gives
(source s, draw index of s), the index counted from `drawn[s]`: pass (draw // len(s)), offset in the pass
(draw % len(s)). A phase with a schedule is version 2 (an sdl that ignores schedules refuses it rather than
mis-reading it). A phase made by this sdl interleaves under `TABLE_BEYOND_TWO` (`mixture_schedule.interleave_of`);
where that reads any of its weights differently from the tree, the rule of earlier sdl, it says so
(`"interleave": 2`, version 3, which an older sdl refuses); a phase without the key is read with the tree, as it
was written. Loading a state into a mixture with other weights, schedule or sources starts a new phase at the
state's cursor: its `drawn` is every source's progress there, its weights and changes those of the new mixture's
schedule from that stream position on, so each source continues its pass exactly where it stopped. `drawn` keeps
sources that were removed, and `sources` their identities (both name every source drawn from, `weights` those mixed
now), so a source added back continues, and one added back with other data, or its data under a new name, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np
from sdl.loader.data.mixture_schedule import TABLE_BEYOND_TWO, TREE, Schedule, Stream, pieces_from, uses_table
from sdl.loader.errors import CheckpointError
from sdl.loader.sampling.state import LoaderState

PHASE_VERSIONS = (1, 2, 3)  # 2: with a schedule; 3: interleaved under a rule other than the tree (and any schedule)


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    epoch: int
    position: int
    num_samples: int
    weights: dict[str, float]
    sources: dict[str, str]
    drawn: dict[str, int] = field(default_factory=dict)
    start: int = 0  # the stream position of (epoch, position)
    schedule: Schedule = ()  # weight changes after `start`: ((stream position, weights), ...)
    interleave: int = TABLE_BEYOND_TWO  # the rule of `mixture_schedule.interleave_of`; TREE for phases that do not say

    def to_dict(self) -> dict[str, Any]:
        table = self.interleave != TREE and uses_table([self.weights, *(w for _, w in self.schedule)])
        out = {"mixture": 3 if table else 2 if self.schedule else 1, "epoch": self.epoch, "position": self.position,
               "start": self.start, "num_samples": self.num_samples, "weights": dict(self.weights),
               "sources": dict(self.sources), "drawn": dict(self.drawn)}
        out |= {"schedule": [[at, dict(w)] for at, w in self.schedule]} if self.schedule else {}
        return out | {"interleave": self.interleave} if table else out

    @classmethod
    def from_dict(cls, data: Any) -> Phase:
        if not is_phase(data) or data["mixture"] not in PHASE_VERSIONS:
            raise CheckpointError(f"mixture phase version {data.get('mixture')!r} is not supported (this sdl reads "
                                  f"{', '.join(map(str, PHASE_VERSIONS))}); upgrade sdl")
        try:
            epoch, position, num_samples = int(data["epoch"]), int(data["position"]), int(data["num_samples"])
            if data["mixture"] == 3 and data.get("interleave") != TABLE_BEYOND_TWO:
                raise ValueError(f"interleave rule {data.get('interleave')!r}, expected {TABLE_BEYOND_TWO}")
            phase = cls(epoch=epoch, position=position, num_samples=num_samples,
                        interleave=TABLE_BEYOND_TWO if data["mixture"] == 3 else TREE,
                        weights={str(k): float(v) for k, v in data["weights"].items()},
                        sources={str(k): str(v) for k, v in data["sources"].items()},
                        drawn={str(k): int(v) for k, v in data.get("drawn", {}).items()},
                        start=int(data.get("start", epoch * num_samples + position)),
                        schedule=tuple((int(at), {str(k): float(v) for k, v in w.items()}) for at, w in data.get("schedule", ())))
            changes = [phase.start] + [at for at, _ in phase.schedule]
            if any(a >= b for a, b in pairwise(changes)) or any(list(w) != list(phase.weights) for _, w in phase.schedule):
                raise ValueError(f"schedule changes {changes[1:]} not increasing after the start {phase.start}, or naming other sources")
            return phase
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"malformed mixture phase in the loader state ({exc}); the checkpoint is corrupt") from None

    def draw(self, epoch: int, position: int) -> int:
        """t: how many positions of the phase come before position `position` of epoch `epoch`."""
        t = (epoch - self.epoch) * self.num_samples + position - self.position
        if t < 0:
            raise self.before(epoch, position)
        return t

    def draws(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """`draw` of int64 `positions` of `epoch`, vectorised. Positions of the phase's own epoch before its start are the
        padding of that epoch's last step (it wraps to the epoch's start): they read the same positions of the next epoch
        (real draws; padding is not counted). An earlier epoch is refused: its draws were made under the weights before."""
        t = positions + ((epoch - self.epoch) * self.num_samples - self.position)
        if t.size and t.min() < 0:
            if epoch < self.epoch:
                raise self.before(epoch, int(positions.min()))
            t = np.where(t < 0, t + self.num_samples, t)
        return t

    def before(self, epoch: int, position: int) -> CheckpointError:
        first = self.epoch + (self.position > 0)  # the first epoch whose every position the phase maps
        return CheckpointError(
            f"position {position:,} of epoch {epoch} lies before the loader state's mixture phase, which began at position "
            f"{self.position:,} of epoch {self.epoch} (where the weights or sources last changed; the draws before it are not "
            f"kept): set_epoch({first}) or a later epoch, or load a checkpoint saved before that change to replay earlier ones")

    def mixed(self) -> dict[str, str]:
        """The identities of the sources the phase mixes (`sources` also keeps those removed before it)."""
        return {name: self.sources[name] for name in self.weights if name in self.sources}

    def stream(self) -> Stream:
        return Stream.build(self.weights, self.schedule, self.start, self.drawn, self.interleave)

    def pieces_from(self, position: int) -> tuple[dict[str, float], Schedule]:
        """The weights in force at stream `position` and the changes after it."""
        return pieces_from(self.weights, self.schedule, position)

    def progress(self, epoch: int, position: int) -> dict[str, int]:
        """Draws of every source (also those no longer mixed) before position `position` of epoch `epoch`."""
        counts = self.stream().counts(self.draw(epoch, position))
        return dict(self.drawn) | {name: int(count) for name, count in zip(self.weights, counts.tolist())}


def is_phase(data: Any) -> bool:
    return isinstance(data, dict) and "mixture" in data


def adapt_state(state: LoaderState, here: Phase, identity: str, describe: dict[str, Any]) -> LoaderState:
    """`state` made loadable by the mixture whose initial phase is `here`: unchanged when it was saved with the same
    weights, schedule and sources; else a new phase at its cursor, every source continuing where it stopped."""
    context = state.dataset.get("context")
    if not is_phase(context):
        return state  # not a mixture's state: the sampler's own check refuses it
    saved = Phase.from_dict(context)
    if saved.mixed() == here.sources and state.fingerprint == identity and \
            saved.pieces_from(saved.start) == here.pieces_from(saved.start):
        saved.draw(state.epoch, state.cursor)  # refuses a state moved back before its phase (set_epoch to an earlier epoch)
        return state
    # saved.sources: every source the stream drew from, removed ones included (their identities, for the checks below)
    changed = [name for name in saved.sources.keys() & here.sources.keys() if saved.sources[name] != here.sources[name]]
    if changed:
        raise CheckpointError(f"mixture source(s) {sorted(changed)} hold other data than when the state was saved; "
                              "give each name the dataset it had, or a new name for new data")
    removed = {saved.sources[name]: name for name in saved.sources.keys() - here.sources.keys()}
    renamed = {name: removed[here.sources[name]] for name in here.sources.keys() - saved.sources.keys() if here.sources[name] in removed}
    if renamed:  # a new name would start the same data on a new pass, with another order: samples repeated
        new, old = sorted(renamed.items())[0]
        raise CheckpointError(f"mixture source {new!r} holds the data the state saved as {old!r}; a source keeps its name across "
                              f"a resume (its progress and shuffled order go by it): name it {old!r} again")
    if not (saved.sources.keys() | saved.drawn.keys()) & here.sources.keys():  # not a change of this run: another run's state
        raise CheckpointError(f"the loader state belongs to another mixture (its sources {sorted(saved.sources)}, this one's "
                              f"{sorted(here.sources)}: none in common); load it with the mixture it was saved with, or, to "
                              "carry that run on with new sources only, name one of its sources too, at weight 0")
    if state.cursor == state.num_samples != here.num_samples:  # every sample of the epoch delivered (what is left is the
        # padding of its last global step, which another epoch length cuts elsewhere): the new phase starts the next epoch
        state = state.next_epoch()
    if state.consumed:
        raise CheckpointError(
            "the loader state's ranks stopped at different steps (consumed ranges beyond the cursor), so the mixture's "
            "weights or sources cannot change from it; resume with the saved weights until the next checkpoint, then change them")
    if state.shuffle != "none" and 0 < state.cursor < state.num_samples:
        raise CheckpointError(
            f"the loader state was saved mid-epoch with shuffle={state.shuffle!r} (positions consumed out of order), so the "
            "mixture's weights cannot change from it; change weights at an epoch start, or use shuffle=False")
    drawn = saved.progress(state.epoch, state.cursor)
    start = saved.start + saved.draw(state.epoch, state.cursor)  # the stream position of the cursor
    weights, schedule = here.pieces_from(start)
    cursor = min(state.cursor, here.num_samples)
    removed_sources = {name: source for name, source in saved.sources.items() if name not in here.sources}
    phase = replace(here, epoch=state.epoch, position=cursor, start=start, weights=weights, schedule=schedule,
                    drawn={**drawn, **{n: drawn.get(n, 0) for n in here.weights}}, sources=here.sources | removed_sources)
    return replace(state, fingerprint=identity, num_samples=here.num_samples, cursor=cursor,
                   dataset={**describe, "context": phase.to_dict()})


def plan_sources(phase: Phase, epoch: int, cursor: int, end: int, sizes: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per source of `sizes`: its weight, pass and offset at (epoch, cursor); its draws and passes to position `end`
    of the epoch; and per piece of the schedule in between (`from`, `to`: stream positions) its weight and draws."""
    stream, t_now, t_end = phase.stream(), phase.draw(epoch, cursor), phase.draw(epoch, end)
    weights = [phase.weights, *(w for _, w in phase.schedule)]
    spans = stream.pieces(t_now, t_end) or [(stream.pieces(t_now, t_now + 1)[0][0], t_now, t_now)]
    pieces = [(phase.start + first, phase.start + last, weights[p], stream.counts(last) - stream.counts(first))
              for p, first, last in spans]
    now, at_end = stream.counts(t_now), stream.counts(t_end)
    out = {}
    for name, size in sizes.items():
        s = stream.names.index(name) if name in stream.names else None
        drawn = int(now[s]) if s is not None else phase.drawn.get(name, 0)
        left = int(at_end[s] - now[s]) if s is not None else 0
        out[name] = {"weight": pieces[0][2].get(name, 0.0), "num_samples": size, "pass": drawn // size,
                     "offset_in_pass": drawn % size, "draws_to_epoch_end": left, "passes_to_epoch_end": round(left / size, 4),
                     "pieces": [{"from": a, "to": b, "weight": w.get(name, 0.0), "draws": int(d[s]) if s is not None else 0,
                                 "passes": round(int(d[s]) / size, 4) if s is not None else 0.0} for a, b, w, d in pieces]}
    return out
