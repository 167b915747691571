"""`Mixture`: sdl datasets blended at weights, the blend computed per position, each source in its own shuffled passes.

Position k of the mixture (in epoch e, see `sdl.loader.data.mixture_phase`) is draw t of the stream; the
interleave (`sdl.loader.sampling.interleave`) of the weights in force there (a `schedule` changes them at given
stream positions: `sdl.loader.data.mixture_schedule`) maps t to a source s and that source's draw index d; d
falls in pass d // len(s) at offset d % len(s), and the sample is `s[Order(len(s), seed, epoch=pass,
key=<name, identity of s>)[offset]]`: each source's own Feistel order, every id once per pass, a new
permutation every pass. A source that is itself a Mixture is read as its stream (`stream_items`): pass p of it is its
epoch p, read with this mixture's seed, so its sources continue their passes as the outer one draws it again.
Nothing O(samples) is stored: positions are mapped many at a time (a chunk of 4,096 for `locate`, a plan of a rank's
next ~256 steps for a batch: `sdl.loader.data.mixture_plan`), and a source's ids are looked up a whole pass or a block
at a time (`sdl.loader.data.mixture_ids`: a Feistel cycle-walk costs numpy calls).

A batch (`__getitems__`) is `{"sample_ids": int64 [B] mixture positions, "source": int64 [B] index of the
source in the dict's order, "source_ids": int64 [B] sample ids within the source (of a nested mixture: its stream
positions), <the sources' fields>}`, a GatheredBatch as every sdl dataset's (a plain DataLoader with the default
collate passes it whole).
Every source must give the same fields (name, dtype, trailing shape); `rename={"code": {"text": "content"}}`
maps a source's fields to common names. The sampler's batches carry the seed, the epoch and the mixture's
phase (`SampleBatch.context`); indices without them (a plain DataLoader, `mixture[i]`) read epoch 0 of
the initial phase with seed 0.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sdl.loader.data.mixture_gather import RowGather, assemble_batch
from sdl.loader.data.mixture_ids import SourceOrders
from sdl.loader.data.mixture_phase import Phase, adapt_state, is_phase, plan_sources
from sdl.loader.data.mixture_schedule import Stream, check_schedule, check_weights
from sdl.loader.data.windows import BATCH_ONLY_KEYS
from sdl.loader.errors import ConfigError
from sdl.loader.sampling.batches import SampleBatch
from sdl.loader.sampling.state import LIMIT, LoaderState

CHUNK = 4096  # positions mapped per lookup (~0.2 ms of interleave and takes), spread over 256 batches of 16; a resume pays one
OWN_FIELDS = ("sample_ids", "source", "source_ids")


class Mixture:
    """Datasets `{name: dataset}` (string names) blended at `weights` (default: their sizes), changed at the stream positions of
    `schedule` ([(position, {name: weight}), ...], see `mixture_schedule`); `num_samples` positions per epoch
    (default: one pass of the source that runs out first, following the schedule from position 0)."""

    def __init__(self, sources: Mapping[str, Any], weights: Mapping[str, float] | None = None, *,
                 num_samples: int | None = None, rename: Mapping[str, Mapping[str, str]] | None = None,
                 schedule: Sequence[tuple[int, Mapping[str, float]]] | Mapping[int, Mapping[str, float]] | None = None) -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise ConfigError("Mixture needs a dict {name: dataset} of at least one source")
        if names := [name for name in sources if not isinstance(name, str)]:  # 1 and "1" would be one name in a checkpoint
            raise ConfigError(f"mixture source name {names[0]!r} ({type(names[0]).__name__}) is not a string; expected "
                              "{name: dataset} with string names (a name keys the source's weights, its order and its "
                              f"progress in checkpoints): name it {str(names[0])!r} or another string")
        self.names = tuple(str(name) for name in sources)
        self.sources = tuple(sources.values())
        self.rename = {str(k): dict(v) for k, v in (rename or {}).items()}
        self.weights = self._weights(weights)
        self.schedule = check_schedule(schedule, self.names)
        self.stream = Stream.build(self.weights, self.schedule, 0, {})  # from position 0, nothing drawn
        self.num_samples = self._num_samples(num_samples)
        self.fields = self._common_fields()
        keys = [f"mixture-source:{name}:{getattr(src, 'identity', '')}" for name, src in zip(self.names, self.sources)]
        self._orders = SourceOrders([len(src) for src in self.sources], keys)
        self._streamed = tuple(hasattr(src, "stream_items") for src in self.sources)  # nested mixtures: ids run on past a pass
        self._chunks: OrderedDict = OrderedDict()
        self._streams: dict[str, Stream] = {}
        self._last: tuple | None = None

    # Step: validation at construction.
    def _weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        for name, source in zip(self.names, self.sources):
            if not (hasattr(source, "__getitems__") and hasattr(source, "__len__") and len(source)):
                raise ConfigError(f"mixture source {name!r} is {type(source).__name__} (or empty); expected an "
                                  "sdl dataset (TokenWindows, ZarrSamples, ArrowRows, Mixture) holding samples")
        if unknown := sorted(set(self.rename) - set(self.names)):
            raise ConfigError(f"rename names source(s) {unknown} the mixture does not have (its sources: {list(self.names)})")
        if weights is None:
            weights = {name: float(len(source)) for name, source in zip(self.names, self.sources)}
        return check_weights(weights, self.names)

    def _num_samples(self, num_samples: int | None) -> int:
        if num_samples is None:
            first = self.stream.first_exhausted([len(source) for source in self.sources])
            if first >= LIMIT:  # sources that are mixtures of a huge num_samples
                raise ConfigError(f"one pass of the mixture's first source to run out is {first:,} positions, not below 2**62 "
                                  f"({LIMIT:,}: a loader state holds counts below it); give num_samples below 2**62")
            return first
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
            raise ConfigError(f"num_samples is {num_samples!r}, expected a positive integer or None (a pass of the first source to end)")
        if num_samples >= LIMIT:  # else make_loader blamed the checkpoint: a loader state holds counts below 2**62
            raise ConfigError(f"num_samples is {int(num_samples):,}, expected a positive integer below 2**62 ({LIMIT:,}: a loader "
                              "state holds counts below it) or None (a pass of the first source to end); give a smaller num_samples")
        return int(num_samples)

    def _schema(self, s: int) -> dict[str, tuple]:
        batch = self._renamed(s, self.sources[s].__getitems__([0]))
        return {name: ((type(v).__name__, str(v.dtype).replace("torch.", ""), tuple(v.shape[1:]))
                       if isinstance(v, (torch.Tensor, np.ndarray)) else ("list",) if isinstance(v, list) else ("value",))
                for name, v in batch.items()}

    def _common_fields(self) -> tuple[str, ...]:
        schemas = [self._schema(s) for s in range(len(self.sources))]
        if any(schema != schemas[0] for schema in schemas):
            found = "; ".join(f"{name}: {_show(schema)}" for name, schema in zip(self.names, schemas))
            raise ConfigError(f"mixture sources give different fields ({found}); give the same sample definition (e.g. seq_len) to every source, "
                              "or rename={name: {field: common_name}} to map them (an ArrowRows number column with nulls is a list: fill them)")
        return tuple(schemas[0])

    def _renamed(self, s: int, batch: dict[str, Any]) -> dict[str, Any]:
        names = self.rename.get(self.names[s], {})
        return {names.get(key, key): value for key, value in batch.items() if key not in OWN_FIELDS}

    # Step: identity and description.
    @property
    def identity(self) -> str:
        parts = ["mixture", [[n, getattr(s, "identity", "")] for n, s in zip(self.names, self.sources)],
                 list(self.weights.values()), self.num_samples, sorted((k, sorted(v.items())) for k, v in self.rename.items())]
        if self.schedule:  # only then: the identity (and checkpoints) of a mixture without one are as before schedules
            parts.append([[at, list(w.values())] for at, w in self.schedule])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    @property
    def phase(self) -> Phase:
        """The initial phase: epoch 0, position 0, nothing drawn yet, the whole schedule ahead."""
        return Phase(epoch=0, position=0, num_samples=self.num_samples, weights=dict(self.weights),
                     sources={n: getattr(s, "identity", "") for n, s in zip(self.names, self.sources)},
                     drawn={name: 0 for name in self.names}, start=0, schedule=self.schedule)

    def describe(self) -> dict[str, Any]:
        sources = {name: {"weight": self.weights[name], "num_samples": len(src), "kind": src.describe().get("kind", "")
                          if hasattr(src, "describe") else type(src).__name__, "identity": getattr(src, "identity", "")}
                   for name, src in zip(self.names, self.sources)}
        schedule = {"schedule": [[at, dict(w)] for at, w in self.schedule]} if self.schedule else {}
        return {"kind": "mixture", "num_samples": self.num_samples, "sources": sources, "window_bound": self.stream.bound,
                **schedule, "context": self.phase.to_dict()}

    def adapt_state(self, state: LoaderState) -> LoaderState:
        """A saved state made loadable here: weights or sources changed -> a new phase, every source where it stopped."""
        return adapt_state(state, self.phase, self.identity, self.describe())

    def source_plan(self, state: LoaderState) -> dict[str, dict[str, Any]]:
        """Per source: its weight, size, draws and pass at the state's cursor, the draws and passes left in the epoch,
        and those per piece of the schedule (`mixture_phase.plan_sources`)."""
        context = state.dataset.get("context")
        phase = Phase.from_dict(context) if is_phase(context) else self.phase
        return plan_sources(phase, state.epoch, state.cursor, state.num_samples, dict(zip(self.names, map(len, self.sources))))

    def __repr__(self) -> str:
        changes = f", schedule: {len(self.schedule)} change(s)" if self.schedule else ""
        return f"Mixture({', '.join(f'{n}={w:.3g}' for n, w in self.weights.items())}, num_samples={self.num_samples}{changes})"

    # Step: access.
    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, position: int) -> dict[str, Any]:
        if not 0 <= position < self.num_samples:
            raise IndexError(f"mixture position {position} is outside [0, {self.num_samples})")
        batch = self.__getitems__([int(position)])
        return {key: value[0] if isinstance(value, (torch.Tensor, list)) else value for key, value in batch.items()
                if key not in BATCH_ONLY_KEYS}  # cu_seqlens, max_seqlen describe a whole batch

    def locate(self, positions: Any, *, seed: int = 0, epoch: int = 0, context: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(source index, sample id within it; of a nested mixture, its stream position) of mixture positions, vectorised."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_samples):
            raise IndexError(f"mixture position outside [0, {self.num_samples})")
        phase, phase_key = self._parse(context)
        key = (phase_key, int(seed), int(epoch))
        if positions.size and positions.min() // CHUNK == positions.max() // CHUNK:  # nearly every batch: one chunk
            chunk = int(positions[0]) // CHUNK
            chunk_source, chunk_ids = self._chunk(key, phase, int(seed), int(epoch), chunk)
            return chunk_source[positions - chunk * CHUNK], chunk_ids[positions - chunk * CHUNK]
        source, ids = np.empty_like(positions), np.empty_like(positions)
        chunk_of = positions // CHUNK
        for chunk in np.unique(chunk_of).tolist():
            where = chunk_of == chunk
            chunk_source, chunk_ids = self._chunk(key, phase, int(seed), int(epoch), chunk)
            source[where], ids[where] = chunk_source[positions[where] - chunk * CHUNK], chunk_ids[positions[where] - chunk * CHUNK]
        return source, ids

    def _parse(self, context: Any) -> tuple[Phase, str]:
        """The phase a batch carries (the initial one when none) and a key for it; the last one is kept (a dict compare)."""
        if not is_phase(context):
            context = None
        if self._last is not None and self._last[0] == context:
            return self._last[1], self._last[2]
        phase = Phase.from_dict(context) if context is not None else self.phase
        self._last = (context, phase, json.dumps(phase.to_dict(), sort_keys=True))
        return phase, self._last[2]

    def _chunk(self, key: tuple, phase: Phase, seed: int, epoch: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._chunks.get((key, chunk))
        if cached is None:
            positions = np.arange(chunk * CHUNK, min(self.num_samples, (chunk + 1) * CHUNK), dtype=np.int64)
            cached = self._chunks[(key, chunk)] = self._map(key[0], phase, seed, epoch, positions)
            while len(self._chunks) > 8:
                self._chunks.popitem(last=False)
        return cached

    def locate_all(self, positions: np.ndarray, *, seed: int = 0, epoch: int = 0, context: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """`locate` of int64 `positions` known to be inside the epoch, computed for them alone (a RowPlan's, uncached)."""
        phase, phase_key = self._parse(context)
        return self._map(phase_key, phase, int(seed), int(epoch), positions)

    def _map(self, phase_key: str, phase: Phase, seed: int, epoch: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, id) of the positions `k` of `epoch` under `phase`."""
        t = phase.draws(epoch, k)
        stream = self._streams.get(phase_key)
        if stream is None:
            stream = self._streams[phase_key] = phase.stream()
        phase_source, draws = stream.locate(t)  # draw indices counted from the start of every source
        if list(phase.weights) == list(self.names):
            source = phase_source
        else:  # the phase names its sources in another order, or sources this mixture no longer has (never drawn here)
            source = np.array([self.names.index(n) if n in self.names else -1 for n in phase.weights], dtype=np.int64)[phase_source]
        ids = np.empty_like(draws)
        for s in range(len(self.sources)):
            mine = np.flatnonzero(source == s)
            if mine.size:
                ids[mine] = self._orders.ids(s, seed, draws[mine])
                if self._streamed[s]:  # pass p of a nested mixture is its epoch p: ids are its stream positions
                    ids[mine] += draws[mine] - draws[mine] % self._orders.sizes[s]
        return source, ids

    def stream_items(self, positions: Sequence[int], seed: int = 0, *, key: SampleBatch | None = None) -> dict[str, Any]:
        """The batch of this mixture's stream positions `positions` (epoch·N + position, from its initial phase), read with
        `seed`: how an outer mixture reads it, so that its draws past N continue the stream (each source its passes).
        `key`: the (seed, epoch, position) per-batch randomness is drawn from (an outer batch's; default (seed, 0, 0))."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and positions.min() < 0:
            raise IndexError(f"mixture stream position {int(positions.min())} is negative")
        key = SampleBatch((), seed=int(seed), epoch=0, position=0) if key is None else key
        return assemble_batch(self, positions, *self.locate_all(positions, seed=seed), key)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        plan = getattr(getattr(indices, "chunk", None), "prepared", None)  # a step of a chunk it planned: the lean route first
        batch = plan.lean_batch(indices) if plan is not None and plan.owner.sources is self.sources else None
        return self._row_gather().batch(self, indices) if batch is None else batch

    def _row_gather(self) -> RowGather:
        """This mixture's RowGather (mixture_gather): made on first use, and again for a copy with other sources."""
        rows = self.__dict__.get("_rows")
        if rows is None or rows.sources is not self.sources:  # with_host_dtype's copy has other sources
            rows = self._rows = RowGather(self.sources, self.rename, CHUNK)
        return rows

    @property
    def slot_layout(self) -> Any:
        """`slot_layout(batch_size)`: the arrays a batch is gathered into by `getitems_into` (a worker's ring slot); only
        when every source gathers rows (TokenWindows of one layout), else AttributeError: the ring then copies a batch in."""
        return self._rows_into().slot_layout

    @property
    def getitems_into(self) -> Any:
        """`getitems_into(indices, into)`: `__getitems__`, the sources writing their rows into the `slot_layout` arrays
        `into`, which the batch's tensors view (see `slot_layout` for when)."""
        rows = self._rows_into()
        return lambda indices, into: rows.batch(self, indices, into)

    def _rows_into(self) -> RowGather:  # the RowGather when its sources gather rows into a caller's arrays
        if (rows := self._row_gather()).layout is None:
            raise AttributeError("the mixture's sources do not all gather rows into a caller's arrays")
        return rows

    # Step: copies and pickling.
    @property
    def wire_dtype(self) -> Any:
        """The sources' common `wire_dtype` (make_loader gathers tokens narrow to cross from workers); none when they differ."""
        dtypes = {getattr(source, "wire_dtype", None) for source in self.sources}
        if len(dtypes) != 1 or None in dtypes:
            raise AttributeError("the mixture's sources have no common wire_dtype")
        return dtypes.pop()

    def with_host_dtype(self, dtype: Any) -> Mixture:
        """A copy whose token sources gather as `dtype` (see TokenWindows.with_host_dtype)."""
        other = copy.copy(self)
        other.sources = tuple(s.with_host_dtype(dtype) if hasattr(s, "with_host_dtype") else s for s in self.sources)
        other._chunks, other._orders, other._streams, other._last = OrderedDict(), copy.copy(self._orders), dict(self._streams), None
        return other

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_chunks", "_last")}  # _orders pickles empty

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._chunks, self._last = OrderedDict(), None


def _show(schema: dict[str, tuple]) -> str:
    return ", ".join(f"{name} {' '.join(str(x) for x in kind[1:]) or kind[0]}" for name, kind in schema.items())
