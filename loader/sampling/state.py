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
(merging the states of ranks that stopped at different steps does). A state saved with gradient accumulation also
holds `"global_batch_size"` and, once every sample of the epoch is delivered, `"padded"`: the padding slots of its
last global step already delivered (OPTIONAL_FIELDS: absent when unset, so other states read as before).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.sampling.order import MODES

STATE_FORMAT = "sdl-loader-state"
STATE_VERSION = 1

# The fields that make two states "the same stream" (the same order): dataset, sample count, seed, shuffle.
# Merging, resuming and resharding all compare these and nothing else; fingerprint and num_samples first.
STREAM_KEYS = ("fingerprint", "num_samples", "seed", "shuffle", "block_size", "window_blocks")

# The integer fields and their least valid value (None: any integer, the seed, which is only hashed). A bool is not an
# integer here. Counts and positions must also lie below LIMIT: numpy computes with them in int64 (slicing, order).
INT_FIELDS = {"num_samples": 0, "seed": None, "block_size": 1, "window_blocks": 1, "epoch": 0, "cursor": 0,
              "world_size": 1, "batch_size": 1}
LIMIT = 1 << 62
# Fields a state holds only when they are not their default (so a state without accumulation reads as before, and an
# sdl that does not know them refuses a state that needs them): the saver's global batch size, the padding delivered.
OPTIONAL_FIELDS = {"global_batch_size": None, "padded": 0}
FIX = "the checkpoint is corrupt or was edited; save `loader.state_dict()` exactly as returned"


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}…" if len(text) > 60 else text


DESCRIBED_SIZES = ("seq_len", "stride", "tokens_per_sample")  # sizes a dataset's description may hold: positive integers


def _bad(name: str, value: Any, expected: str) -> CheckpointError:
    return CheckpointError(f"loader state field {name!r} is {_shown(value)} ({type(value).__name__}), expected {expected}: {FIX}")


def _checked_int(name: str, value: Any, least: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _bad(name, value, "an integer")
    if least is not None and not least <= value < LIMIT:
        raise _bad(name, value, f"an integer >= {least} and below 2**62")
    return int(value)  # numpy integers become ints: the order key hashes repr(seed)


ARGUMENT_LEAST = {"num_samples": 0, "batch_size": 1, "seed": None, "rank": 0, "world_size": 1, "block_size": 1, "window_blocks": 1,
                  "num_workers": 0}


def check_arguments(**values: Any) -> None:
    """Refuse a sampler (or make_loader) argument of the wrong type or range, naming it: integers must be ints (not
    bools, floats or strings), `drop_last` a bool. (The saved state checks the same fields, with checkpoint advice.)"""
    for name, value in values.items():
        if name == "drop_last":
            if not isinstance(value, bool):
                raise ConfigError(f"drop_last={value!r}: expected True or False")
            continue
        least = ARGUMENT_LEAST[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (least is not None and value < least):
            expected = "an integer" if least is None else f"an integer >= {least}"
            raise ConfigError(f"{name}={value!r}: expected {expected}")


def _checked_ranges(value: Any, cursor: int, num_samples: int) -> tuple[tuple[int, int], ...]:
    """The serialised `consumed` field: [[start, end], …] with cursor <= start < end <= num_samples."""
    if not isinstance(value, (list, tuple)):
        raise _bad("consumed", value, "a list of [start, end] pairs")
    ranges: list[tuple[int, int]] = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise _bad("consumed", item, "a [start, end] pair")
        start, end = (_checked_int("consumed", x, 0) for x in item)
        if not cursor <= start < end <= num_samples:
            raise CheckpointError(f"loader state consumed range [{start}, {end}) lies outside [cursor={cursor}, "
                                  f"num_samples={num_samples}] or is empty or reversed: {FIX}")
        if start <= (ranges[-1][1] if ranges else cursor):  # sdl writes them sorted, apart, beyond the cursor
            raise CheckpointError(f"loader state consumed range [{start}, {end}) touches the cursor or the range before it: "
                                  f"sdl writes sorted, separate ranges; {FIX}")
        ranges.append((start, end))
    return tuple(ranges)


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
    global_batch_size: int | None = None  # the saver's, when it accumulated (OPTIONAL: written only when set)
    padded: int = 0  # padding slots of the epoch's last global step already delivered (all its real samples are)

    def __post_init__(self) -> None:
        self._check_types()
        if self.num_samples < 0 or self.epoch < 0 or not 0 <= self.cursor <= self.num_samples:
            raise CheckpointError(
                f"loader state has num_samples={self.num_samples}, epoch={self.epoch}, cursor={self.cursor}; "
                "expected 0 <= cursor <= num_samples and epoch >= 0: the state is corrupt"
            )
        if self.world_size <= 0 or self.batch_size <= 0:
            raise CheckpointError(f"loader state has world_size={self.world_size}, batch_size={self.batch_size}; expected both > 0")
        if self.global_batch_size is not None:
            _checked_int("global_batch_size", self.global_batch_size, 1)
        if _checked_int("padded", self.padded, 0) and (self.global_batch_size is None or self.padded >= self.global_batch_size
                                                       or self.cursor != self.num_samples or self.consumed):
            raise _bad("padded", self.padded, "0, or fewer than global_batch_size padding slots once every sample of the "
                       "epoch is consumed")
        cursor, consumed = normalise_ranges(self.cursor, self.consumed, self.num_samples)
        object.__setattr__(self, "cursor", cursor)
        object.__setattr__(self, "consumed", consumed)

    def _check_types(self) -> None:
        for name, least in INT_FIELDS.items():
            object.__setattr__(self, name, _checked_int(name, getattr(self, name), least))
        if not isinstance(self.fingerprint, str):
            raise _bad("fingerprint", self.fingerprint, "a string")
        if self.shuffle not in MODES:
            raise _bad("shuffle", self.shuffle, f"one of {', '.join(MODES)}")
        if not isinstance(self.drop_last, bool):
            raise _bad("drop_last", self.drop_last, "true or false")
        if self.rank is not None:
            object.__setattr__(self, "rank", _checked_int("rank", self.rank, 0))
        if not isinstance(self.dataset, dict):
            raise _bad("dataset", self.dataset, "a dict")
        for name in DESCRIBED_SIZES:  # the dataset's description: what `sdl reshard-ckpt --dataset` reopens it with
            if self.dataset.get(name) is not None:
                _checked_int(f"dataset.{name}", self.dataset[name], 1)

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
        return replace(self, epoch=self.epoch + 1 if epoch is None else epoch, cursor=0, consumed=(), padded=0)

    def after_slots(self, slots: int) -> LoaderState:
        """The state after `slots` more positions of the epoch's steps: the next remaining samples, then padding."""
        real = min(slots, self.remaining)
        return replace(self.advance(real), padded=self.padded + slots - real) if slots > real else self.advance(real)

    def padded_by(self, global_batch_size: int | None) -> int:
        """Padding slots delivered, as a sampler of `global_batch_size` counts them (none when saved under another)."""
        return self.padded if global_batch_size == self.global_batch_size else 0

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
        return {k: v for k, v in out.items() if k not in OPTIONAL_FIELDS or v != OPTIONAL_FIELDS[k]}

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
        missing = [k for k in cls.__dataclass_fields__ if k not in body and k not in OPTIONAL_FIELDS]
        if missing:
            raise CheckpointError(f"loader state lacks the field(s) {missing}; every state sdl writes has them all: {FIX}")
        for name, least in INT_FIELDS.items():
            body[name] = _checked_int(name, body[name], least)
        if body["cursor"] > body["num_samples"]:
            raise CheckpointError(f"loader state has cursor={body['cursor']} past num_samples={body['num_samples']}: {FIX}")
        if body["rank"] is not None and not 0 <= _checked_int("rank", body["rank"], 0) < body["world_size"]:
            raise _bad("rank", body["rank"], f"null or a rank below world_size={body['world_size']}")
        body["consumed"] = _checked_ranges(body["consumed"], body["cursor"], body["num_samples"])
        return cls(**body)


def is_state_dict(obj: Any) -> bool:
    """Whether `obj` is a serialised LoaderState (what checkpoint walkers look for)."""
    return isinstance(obj, dict) and obj.get("format") == STATE_FORMAT
