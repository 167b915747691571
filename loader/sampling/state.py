"""LoaderState: where an epoch stands, as one global cursor; small, versioned, JSON-able, topology-free.

Serialised form (a plain dict of str/int/float/bool/list/None, so `torch.load(weights_only=True)`
reads it back and `json.dumps` writes it):

    {"format": "sdl-loader-state", "version": 1,
     "fingerprint": "<dataset identity: data + sample definition>", "num_samples": 1000000,
     "seed": 0, "shuffle": "global", "block_size": 1024, "window_blocks": 16,
     "epoch": 3, "cursor": 52480, "consumed": [[52736, 52800]],
     "drop_last": true, "world_size": 8, "batch_size": 16, "rank": 0,
     "dataset": {"kind": "tokens", "seq_len": 2048, "stride": 2048, ...}}

The consumed set of the epoch is positions `[0, cursor)` of the epoch's order plus the sorted,
disjoint `consumed` ranges beyond the cursor (present only after ranks stopped unevenly and their
states were merged). The samples still to deliver are the *remaining* positions, in order;
`position_of(j)` maps the j-th remaining one to its position in O(len(consumed)).
`world_size`, `batch_size` and `rank` record who saved the state: nothing in a resume needs them
(merging the states of ranks that stopped at different steps does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from sdl.loader.errors import CheckpointError

STATE_FORMAT = "sdl-loader-state"
STATE_VERSION = 1

# The fields that make two states "the same stream" (the same order): dataset, sample count, seed, shuffle.
# Merging, resuming and resharding all compare these and nothing else; fingerprint and num_samples first.
STREAM_KEYS = ("fingerprint", "num_samples", "seed", "shuffle", "block_size", "window_blocks")


def normalise_ranges(cursor: int, ranges: Any, num_samples: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Merge overlapping/adjacent ranges, fold those touching the cursor into it, drop empty ones."""
    merged: list[list[int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in ranges):
        start, end = max(start, cursor), min(end, num_samples)
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    while merged and merged[0][0] <= cursor:
        cursor = max(cursor, merged.pop(0)[1])
    return cursor, tuple((a, b) for a, b in merged)


@dataclass(frozen=True, kw_only=True, slots=True)
class LoaderState:
    fingerprint: str
    num_samples: int
    seed: int
    shuffle: str = "global"
    block_size: int = 1024
    window_blocks: int = 16
    epoch: int = 0
    cursor: int = 0
    consumed: tuple[tuple[int, int], ...] = ()
    drop_last: bool = True
    world_size: int = 1
    batch_size: int = 1
    rank: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_samples < 0 or self.epoch < 0 or not 0 <= self.cursor <= self.num_samples:
            raise CheckpointError(
                f"loader state has num_samples={self.num_samples}, epoch={self.epoch}, cursor={self.cursor}; "
                "expected 0 <= cursor <= num_samples and epoch >= 0: the state is corrupt"
            )
        if self.world_size <= 0 or self.batch_size <= 0:
            raise CheckpointError(f"loader state has world_size={self.world_size}, batch_size={self.batch_size}; expected both > 0")
        cursor, consumed = normalise_ranges(self.cursor, self.consumed, self.num_samples)
        object.__setattr__(self, "cursor", cursor)
        object.__setattr__(self, "consumed", consumed)

    # Step: the consumed set and the remaining stream.
    @property
    def num_consumed(self) -> int:
        return self.cursor + sum(end - start for start, end in self.consumed)

    @property
    def remaining(self) -> int:
        return self.num_samples - self.num_consumed

    def position_of(self, j: Any) -> np.ndarray:
        """Positions (in the epoch order) of the j-th remaining samples, vectorised; j in [0, remaining)."""
        j = np.asarray(j, dtype=np.int64)
        if not self.consumed:
            return self.cursor + j
        starts = np.array([a for a, _ in self.consumed], dtype=np.int64)
        lengths = np.array([b - a for a, b in self.consumed], dtype=np.int64)
        skipped_before = np.concatenate(([0], np.cumsum(lengths)))
        free_before = starts - self.cursor - skipped_before[:-1]
        return self.cursor + j + skipped_before[np.searchsorted(free_before, j, side="right")]

    def advance(self, count: int) -> LoaderState:
        """The state after the next `count` remaining samples are consumed (count <= remaining)."""
        if count < 0 or count > self.remaining:
            raise ValueError(f"cannot advance by {count}: {self.remaining} samples remain")
        if count == 0:
            return self
        if count == self.remaining:
            return replace(self, cursor=self.num_samples, consumed=())
        return replace(self, cursor=int(self.position_of(count)), consumed=self.consumed)

    def with_consumed(self, ranges: Any) -> LoaderState:
        """The state with extra consumed position ranges `[(start, end), …]`."""
        return replace(self, consumed=tuple(self.consumed) + tuple((int(a), int(b)) for a, b in ranges))

    def next_epoch(self, epoch: int | None = None) -> LoaderState:
        return replace(self, epoch=self.epoch + 1 if epoch is None else epoch, cursor=0, consumed=())

    def same_stream(self, other: LoaderState) -> bool:
        """Whether two states describe the same order (dataset, seed, shuffle) — what merging needs."""
        return not self.stream_differences(other)

    def stream_differences(self, other: LoaderState) -> list[str]:
        """The STREAM_KEYS on which two states differ."""
        return [k for k in STREAM_KEYS if getattr(self, k) != getattr(other, k)]

    # Step: serialisation.
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": STATE_FORMAT, "version": STATE_VERSION}
        out.update(asdict(self))
        out["consumed"] = [list(r) for r in self.consumed]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> LoaderState:
        if isinstance(data, LoaderState):
            return data
        if not is_state_dict(data):
            raise CheckpointError(f"expected a loader state (a dict with format {STATE_FORMAT!r}), found {type(data).__name__}")
        if data.get("version") != STATE_VERSION:
            raise CheckpointError(
                f"loader state version {data.get('version')!r} is not supported (this sdl reads version {STATE_VERSION}); upgrade sdl"
            )
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        unknown = sorted(set(body) - set(cls.__dataclass_fields__))
        if unknown:
            raise CheckpointError(f"loader state has unknown keys {unknown}; it was written by a newer sdl, upgrade sdl")
        try:
            body["consumed"] = tuple(tuple(int(x) for x in r) for r in body.get("consumed", ()))
            return cls(**body)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed loader state ({exc}); the checkpoint is corrupt") from None


def is_state_dict(obj: Any) -> bool:
    """Whether `obj` is a serialised LoaderState (what checkpoint walkers look for)."""
    return isinstance(obj, dict) and obj.get("format") == STATE_FORMAT
