"""Where every source of a mixture stands: the current phase (weights, start, per-source draws), and weight changes.

A mixture is one endless stream; epoch e of the sampler covers its positions [e·N, (e+1)·N). A
*phase* is a stretch of that stream drawn at one set of weights. It is stored in the loader state's
`dataset["context"]` (so it travels with every checkpoint and every batch), O(number of sources):

    {"mixture": 1, "epoch": 3, "position": 5120, "num_samples": 40000,
     "weights": {"web": 0.75, "code": 0.25}, "sources": {"web": "<identity>", "code": "<identity>"},
     "drawn": {"web": 91234, "code": 30411}}

Position k of epoch e is draw t = (e - epoch)·N + (k - position) of the phase; the interleave of the
phase's weights gives (source s, c) and the draw index of s is `drawn[s] + c`: pass (draw // len(s)),
offset in the pass (draw % len(s)). Loading a state into a mixture with other weights (or sources)
starts a new phase at the state's cursor whose `drawn` is every source's progress there, so each
source continues its pass exactly where it stopped. `drawn` keeps sources that were removed, so a
source added back continues too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sdl.loader.errors import CheckpointError
from sdl.loader.sampling.interleave import Interleave
from sdl.loader.sampling.state import LoaderState

PHASE_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    epoch: int
    position: int
    num_samples: int
    weights: dict[str, float]
    sources: dict[str, str]
    drawn: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mixture": PHASE_VERSION, "epoch": self.epoch, "position": self.position, "num_samples": self.num_samples,
                "weights": dict(self.weights), "sources": dict(self.sources), "drawn": dict(self.drawn)}

    @classmethod
    def from_dict(cls, data: Any) -> Phase:
        if not is_phase(data) or data["mixture"] != PHASE_VERSION:
            raise CheckpointError(f"mixture phase version {data.get('mixture')!r} is not supported (this sdl reads "
                                  f"{PHASE_VERSION}); upgrade sdl")
        try:
            return cls(epoch=int(data["epoch"]), position=int(data["position"]), num_samples=int(data["num_samples"]),
                       weights={str(k): float(v) for k, v in data["weights"].items()},
                       sources={str(k): str(v) for k, v in data["sources"].items()},
                       drawn={str(k): int(v) for k, v in data.get("drawn", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"malformed mixture phase in the loader state ({exc}); the checkpoint is corrupt") from None

    def interleave(self) -> Interleave:
        return Interleave(weights=tuple(self.weights.values()))

    def progress(self, epoch: int, position: int) -> dict[str, int]:
        """Draws of every source (also those no longer mixed) before position `position` of epoch `epoch`."""
        t = (epoch - self.epoch) * self.num_samples + position - self.position
        if t < 0:
            raise CheckpointError(f"the loader state (epoch {epoch}, position {position}) lies before its mixture phase "
                                  f"(epoch {self.epoch}, position {self.position}): the state is corrupt")
        counts = self.interleave().counts(t)
        out = dict(self.drawn)
        for name, count in zip(self.weights, counts.tolist()):
            out[name] = out.get(name, 0) + int(count)
        return out


def is_phase(data: Any) -> bool:
    return isinstance(data, dict) and "mixture" in data


def adapt_state(state: LoaderState, here: Phase, identity: str, describe: dict[str, Any]) -> LoaderState:
    """`state` made loadable by the mixture whose initial phase is `here`: unchanged when it was saved with the same
    weights and sources; else a new phase at its cursor, every source continuing where it stopped."""
    context = state.dataset.get("context")
    if not is_phase(context):
        return state  # not a mixture's state: the sampler's own check refuses it
    saved = Phase.from_dict(context)
    if saved.weights == here.weights and saved.sources == here.sources and state.fingerprint == identity:
        return state
    changed = [name for name in saved.sources.keys() & here.sources.keys() if saved.sources[name] != here.sources[name]]
    if changed:
        raise CheckpointError(f"mixture source(s) {sorted(changed)} hold other data than when the state was saved; "
                              "give each name the dataset it had, or a new name for new data")
    if state.consumed:
        raise CheckpointError(
            "the loader state's ranks stopped at different steps (consumed ranges beyond the cursor), so the mixture's "
            "weights or sources cannot change from it; resume with the saved weights until the next checkpoint, then change them")
    if state.shuffle != "none" and state.cursor != 0:
        raise CheckpointError(
            f"the loader state was saved mid-epoch with shuffle={state.shuffle!r} (positions consumed out of order), so the "
            "mixture's weights cannot change from it; change weights at an epoch start, or use shuffle=False")
    drawn = saved.progress(state.epoch, state.cursor)
    cursor = min(state.cursor, here.num_samples)
    phase = replace(here, epoch=state.epoch, position=cursor, drawn={**drawn, **{n: drawn.get(n, 0) for n in here.weights}})
    return replace(state, fingerprint=identity, num_samples=here.num_samples, cursor=cursor,
                   dataset={**describe, "context": phase.to_dict()})
