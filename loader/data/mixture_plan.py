"""Mixture positions planned at once for a row gather: each position's source, sample id and window, located.

A Mixture's batch then needs no mapping and no per-source lookup. A plan (`RowPlan`) holds, for many positions at
once, each one's source, sample id, window start, and the shard and byte offset of its window (key -1: a window that
crosses into the next shard). Plans are made

- in process, for a sampler's StepChunk (`StepPlan`, kept on the chunk): exactly the rank's positions of its next
  ~256 steps, in any order (shuffle=True too);
- in a DataLoader worker (a task of consecutive steps, gathered into a ring slot), for the positions of the task and of
  the worker's next tasks (`mixture_step.task_positions`, ~PLAN_POSITIONS in all): with `shuffle=False` a rank's steps are affine in
  the step, and the DataLoader deals tasks to its workers in turn, so a worker's plan holds its own positions only
  (a plan of consecutive positions would hold 1/(ranks × workers) of them for the worker);
- else (a plain list of positions, a worker's task of shuffled steps) for the `PLAN_POSITIONS` consecutive positions
  from a batch of consecutive positions that the last plan does not hold.

A batch gathers its windows in the shards' dtype into one `[B, seq_len + shift]` buffer in batch order and casts it
into the batch's two contiguous halves, as a single source does (`sdl.loader.data.window_copy`). The buffer is

- one fancy index of a `SpanView` over the plan's shards (`sdl.loader.data.span_view`), when the plan maps them as it
  is made (at most EAGER_SHARDS local shards): the same one call as a single shard's batch, whatever the sources;
  a window across two shards is read piecewise into its row afterwards;
- else (a plan over many shards, or an object store's) the rows' bytes joined (`bytes.join` of memoryview slices:
  one copy each, ~0.2 µs of Python a row) when a window is at least `ROW_COPY_BYTES`;
- else filled by one fancy index of a strided window view per (source, shard) present (~3 µs a call, whatever its rows).

Measured on 2 uint32 sources, one 16 × 2,048 batch, 2-core VM: the span view's gather 28.5 µs against 31.5 µs for the
rows joined. Without it (memoryview slices assigned row by row, which the join beats by ~3 µs at 16 rows): the row
copies beat the fancy indices at 8 × 4,096 (32 against 41 µs) and 16 × 2,048 (32 against 37 µs), tie at 32 × 1,024,
and lose at 64 × 512 (70 against 57 µs). Planning costs ~0.3 ms per 4,096 positions (mapping ~0.1, locating ~0.2)
plus the sources' id blocks (`sdl.loader.data.mixture`); over 532 (source, shard) pairs ~0.5 ms, the maps taken from
the last plan's view while no LRU has closed a shard (else through the LRUs, ~1 µs a shard).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from sdl.loader.data.span_view import SpanView
from sdl.loader.index.handles import OpenSources, OutOfDescriptors

PLAN_POSITIONS = 4096  # positions planned at once: ~0.3 ms of numpy calls, spread over 256 batches of 16
ROW_COPY_BYTES = 4096  # windows of at least this many bytes are copied row by row (see the module docstring)
EAGER_SHARDS = 4096  # a plan whose windows lie in at most this many (source, shard) pairs maps them when it is made


class RowPlan:
    """Mixture positions (any int64 array, inside the epoch) of one (seed, epoch, phase) of a mixture whose sources gather
    rows alike, located (see the module docstring); `gather` fills a batch from a run of its rows."""

    def __init__(self, sources: tuple, positions: np.ndarray, source: np.ndarray, ids: np.ndarray, kept: list | None = None) -> None:
        self.sources, self.size, self.positions = sources, len(positions), positions
        self._kept = [None, -1] if kept is None else kept  # [the last SpanView made, OpenSources.closed when its maps
        # were the LRUs' (-1: unknown)], shared by a RowGather's plans
        self.columns = np.stack([positions, source, ids])  # a batch's sample_ids, source, source_ids: one copy of a slice
        self.source = source
        self.starts, keys, offsets = np.empty_like(ids), np.full_like(ids, -1), np.zeros_like(ids)
        self._lrus = tuple(dataset._open for dataset in sources)  # one object may be several sources: one LRU
        count, distinct, per_lru = len(sources), [], {}
        for s, dataset in enumerate(sources):
            mine = np.flatnonzero(source == s)
            if not mine.size:
                continue
            starts = (ids[mine] + dataset._windows.start) * dataset.stride
            first, offset = dataset.index.locate(starts)
            fits = offset + (dataset.seq_len + max(dataset.shift_choices)) <= dataset._lengths[first]
            self.starts[mine], offsets[mine] = starts, offset
            keys[mine] = np.where(fits, first * count + s, -1)  # (shard, source) as one int; -1: read across shards
            low, high = int(first.min()), int(first.max())
            shards = [low] if low == high else (np.flatnonzero(np.bincount(first - low)) + low).tolist()
            distinct += [shard * count + s for shard in shards]
            per_lru.setdefault(id(self._lrus[s]), set()).update(shards)
        self.keys, self.offsets = keys, offsets
        self.across = bool((keys < 0).any())  # some window crosses shards
        # The bytes of each (shard, source) key, for the row copies: opened now when they are few local shards (a
        # file mapped ahead costs nothing but the map); else when a batch needs them (lazy): an object store's, so that
        # none is fetched before the loader's prefetcher gets to it, and many shards, so that a plan neither opens
        # thousands at once nor keeps them mapped past the sources' own LRU of open shards.
        self._closed = OpenSources.closed  # before mapping: a map closed meanwhile is seen
        self.lazy = len(distinct) > EAGER_SHARDS or any(dataset.remote is not None for dataset in sources) \
            or any(len(per_lru.get(id(lru), ())) > lru.max_open for lru in self._lrus)
        self.views: dict[int, memoryview] = {}  # key -> its shard's bytes, for the row copies (made when first used)
        # key -> its shard, as the LRU holds it (eager plans): the last plan's view holds maps that are still the LRUs'
        # while no LRU has closed anything since (then no visit per shard), the others through the LRUs
        kept = self._kept[0].shards if self._kept[0] is not None and self._kept[1] == OpenSources.closed else {}
        self._held: dict[int, np.ndarray] = {} if self.lazy else {key: kept[key] for key in distinct if key in kept}
        try:
            for key in [] if self.lazy else [key for key in distinct if key not in self._held]:
                self._bytes(key)
        except OutOfDescriptors:  # the maps taken so far are the LRUs' alone again: this plan reads through them
            self.lazy, self.views, self._held = True, {}, {}
        self._span: tuple | None = None  # see _make_span
        self._fast: tuple | None = None  # see _make_fast

    # Lists for per-row Python, made when first used (a tolist of 4,096 ids costs ~50 µs; the span route needs none).
    @cached_property
    def position_list(self) -> list[int]:  # a batch is planned iff its list equals a slice of this (~0.2 µs)
        return self.positions.tolist()

    @cached_property
    def key_list(self) -> list[int]:
        return self.keys.tolist()

    @cached_property
    def byte_list(self) -> list[int]:
        return (self.offsets * self.sources[0]._shard_dtype.itemsize).tolist()

    # Step: the batch's windows, in the shards' dtype, in batch order.
    def gather(self, i: int, b: int, shift: int, tokens: np.ndarray, positions: np.ndarray | None) -> None:
        """Positions [i, i + b) of the plan into `tokens` ([2, b, seq_len]: inputs, labels `shift` later) and, for
        doc_starts sources, `positions` ([b, seq_len] document positions)."""
        first = self.sources[0]
        span = first.seq_len + shift
        dtype = first._shard_dtype
        windows = None if self.lazy else self._by_span(i, b, span)
        if windows is None and span * dtype.itemsize >= ROW_COPY_BYTES:
            windows = self._by_rows(i, b, span, dtype)
        elif windows is None:
            windows = np.empty((b, span), dtype=dtype)
            self._by_groups(i, b, span, windows)
        tokens[0] = windows[:, :first.seq_len]
        tokens[1] = windows[:, shift:]
        if positions is not None:
            self._doc_positions(i, b, positions)

    def lean_windows(self, i: int, b: int, span: int) -> np.ndarray | None:
        """Positions [i, i + b) as [b, span] windows in the shards' dtype, by one fancy index of the plan's SpanView after
        the LRU visit one source's batch pays, with what that needs made once (`_make_fast`), a window across shards
        then read piecewise into its row; None when they take the general route (`_by_span`, which takes the plan's maps
        again): a lazy plan, an LRU of the process has closed a shard since, or the first window crosses shards."""
        spanned, at, visits, closed, crossed = self._fast or self._make_fast()
        key = int(self.keys[i])
        if OpenSources.closed != closed or key < 0:
            return None
        visit = visits.get(key)
        if visit is None:  # made when first used: a plan over hundreds of shards visits fewer than it holds
            visit = visits[key] = (self._lrus[key % len(self.sources)].get, key // len(self.sources), self._held[key])
        if visit[0](visit[1]) is not visit[2]:
            return None
        return self._span_windows(spanned, at, i, b, span, crossed is not None and crossed[i + b] != crossed[i])

    def _make_fast(self) -> tuple:
        """(the SpanView, each position's row in it, {key: (its LRU's get, shard, the array the plan holds)} as they are
        visited, OpenSources.closed when made, the running count of windows across shards (None: none)) over the maps
        the plan holds now; a tuple that never serves (closed -1) for a lazy plan or one without a view. Made again
        when the view changes."""
        spanned = None
        if not self.lazy and self.size and self._visit(-1):  # (_visit may make the plan lazy, and drop _fast)
            spanned, at = self._span or self._make_span()
        if spanned is None:
            self._fast = (None, None, None, -1, None)
            return self._fast
        crossed = np.concatenate(([0], np.cumsum(self.keys < 0))).tolist() if self.across else None
        self._fast = (spanned, at, {}, OpenSources.closed, crossed)
        return self._fast

    def _visit(self, key: int) -> bool:
        """An eager plan's visit to the LRU per batch, as a single source pays (the LRU checks the sizes of the open
        shards now and then; a shard mapped anew drops the span view), and `_keep_open`. False when the process ran out
        of file descriptors meanwhile, or its LRUs now keep fewer shards than it holds: the plan then drops every map it
        holds and reads through the LRUs (lazy)."""
        try:
            if key >= 0:
                self._bytes(key)
            return self._keep_open()
        except OutOfDescriptors:
            return self._let_go()

    def _let_go(self) -> bool:
        """Drop every map the plan holds (and its views), to read through the LRUs from now on (lazy); False."""
        self.lazy, self.views, self._held, self._span, self._fast, self._kept[0] = True, {}, {}, None, None, None
        return False

    def _keep_open(self) -> bool:
        """Keep every shard the plan holds one its source's LRU holds (whose size checks then cover it, see
        `sdl.loader.index.handles`): when an LRU has closed any shard since, and one of the plan's is gone from it, take
        them all again through the LRUs (a reopened file is checked as it opens, and drops the span view); when the LRUs
        no longer keep them all even then (an LRU keeping fewer since the process ran out of descriptors), let go of
        them (`_let_go`, False)."""
        if OpenSources.closed == self._closed:  # no LRU of this process closed anything since
            return True
        if not self._all_held():
            for key in list(self._held):
                self._bytes(key)
            if not self._all_held():
                return self._let_go()
        self._closed = OpenSources.closed
        return True

    def _all_held(self) -> bool:
        """Whether each shard the plan holds is the one its source's LRU holds now."""
        count = len(self.sources)
        return all(lru.holds_all({key // count: self._held[key] for key in self._held if key % count == s})
                   for s, lru in enumerate(self._lrus))

    def _by_span(self, i: int, b: int, span: int) -> np.ndarray | None:
        """The windows of positions [i, i + b) by one fancy index of a SpanView over the plan's shards (a plan that maps
        them when it is made); None when no such view can be made."""
        windows = self.lean_windows(i, b, span)
        if windows is not None:
            return windows
        if not self._visit(int(self.keys[i])):
            return None
        spanned, rows = self._span or self._make_span()
        fast = self._fast  # kept, now valid, while the view is the same (the same maps); else made again
        self._fast = None if spanned is None or fast[0] is not spanned else (*fast[:3], OpenSources.closed, fast[4])
        return None if spanned is None else self._span_windows(spanned, rows, i, b, span, self.across)

    def _span_windows(self, spanned: SpanView, at: np.ndarray, i: int, b: int, span: int, crossing: bool) -> np.ndarray:
        """Positions [i, i + b) as [b, span] windows: one fancy index of `spanned` at their rows `at` (of the largest
        shift's span: this batch's are its first `span` tokens); with `crossing`, the windows across shards then read
        piecewise over the placeholder rows gathered for them."""
        windows = spanned.view[at[i:i + b]]
        if spanned.span != span:
            windows = windows[:, :span]
        if crossing:
            for row in np.flatnonzero(self.keys[i:i + b] < 0).tolist():
                windows[row] = self._across(i + row, span, windows.dtype)
        return windows

    def _make_span(self) -> tuple:
        """(the SpanView of the largest shift's windows over the plan's shards, each position's row in it; a window across
        shards gets the first shard's first row as a placeholder), or (None, None) when the shards cannot share one."""
        self._span = (None, None)
        fits, first = self.keys >= 0, self.sources[0]
        if fits.any():
            shards, span = dict(self._held), first.seq_len + max(first.shift_choices)
            spanned = self._kept[0]  # the last plan's view serves when it holds these very maps (many shards: ~2 µs each)
            if spanned is None or spanned.span != span or not all(spanned.shards.get(key) is a for key, a in shards.items()):
                try:
                    spanned = SpanView(shards, span)
                except ValueError:
                    return self._span
                self._kept[:] = spanned, OpenSources.closed if self._closed == OpenSources.closed else -1  # its maps the LRUs'
            placeholder = int(self.keys[fits][0])
            self._span = (spanned, spanned.rows(np.where(fits, self.keys, placeholder), np.where(fits, self.offsets, 0)))
        return self._span

    def _by_rows(self, i: int, b: int, span: int, dtype: np.dtype) -> np.ndarray:
        """The windows of positions [i, i + b): their bytes joined (bytes.join copies each slice once, in C: ~3 µs less
        a 16-row batch than assigning each row into an array), viewed as [b, span]."""
        keys, row_bytes = self.key_list[i:i + b], span * dtype.itemsize
        # Windows across shards first: their reads go through the LRUs, which may close a shard the rows below read
        across = {row: self._across(i + row, span, dtype) for row, key in enumerate(keys) if key < 0} if self.across else {}
        if self.lazy or not self._visit(keys[0]):  # this batch's shards through the LRU, held no longer than the batch
            count = len(self.sources)
            views = {key: memoryview(self.sources[key % count]._shard(key // count)).cast("B") for key in set(keys) if key >= 0}
        else:  # the plan's maps, their memoryviews made when first used
            views = self.views
            for key in set(keys) - views.keys() - {-1}:
                views[key] = memoryview(self._held[key]).cast("B")
        if not across:
            rows = [views[key][offset:offset + row_bytes] for key, offset in zip(keys, self.byte_list[i:i + b])]
        else:  # a window across shards: read piecewise (above)
            rows = [views[key][offset:offset + row_bytes] if key >= 0 else across[row]
                    for row, (key, offset) in enumerate(zip(keys, self.byte_list[i:i + b]))]
        return np.frombuffer(b"".join(rows), dtype=dtype).reshape(b, span)

    def _by_groups(self, i: int, b: int, span: int, windows: np.ndarray) -> None:
        keys, count = self.keys[i:i + b], len(self.sources)
        for key in set(self.key_list[i:i + b]):
            rows = np.flatnonzero(keys == key)
            if key < 0:
                for row in rows.tolist():
                    windows[row] = self._across(i + row, span, windows.dtype)
            else:
                windows[rows] = self.sources[key % count]._window_view(key // count, span)[self.offsets[i:i + b][rows]]

    def _across(self, t: int, span: int, dtype: np.dtype) -> np.ndarray:
        """The window of plan position t, which crosses a shard boundary, read piecewise."""
        return self.sources[int(self.source[t])]._read_span(int(self.starts[t]), span).astype(dtype)

    def _bytes(self, key: int) -> None:
        """Hold shard key // S of source key % S as its LRU of open shards (which also checks their sizes now and then)
        holds it now: a shard mapped anew drops the views made over its old map."""
        count = len(self.sources)
        shard = self.sources[key % count]._shard(key // count)
        held = self._held.get(key)
        if held is not shard:
            if held is not None:
                self._span = None  # made over the shard's old map
                self.views.pop(key, None)
            self._held[key] = shard

    def _doc_positions(self, i: int, b: int, positions: np.ndarray) -> None:
        source, starts = self.source[i:i + b], self.starts[i:i + b]
        for s, dataset in enumerate(self.sources):
            rows = np.flatnonzero(source == s)
            if rows.size:
                positions[rows] = dataset._doc_starts.position_ids(starts[rows], dataset.seq_len, positions.dtype)
