"""The order-aware prefetcher: a thread that fetches what the next steps need, ahead of the training loop.

The loader's order is computed, so at any cursor the objects of the next `depth` steps are known. The thread
reads the order a chunk of hundreds of steps at a time as arrays (`needs`: for each step, the objects its
samples start in and the objects whose heads they spill into; TokenWindows computes them without Python per
step, datasets that name a batch's objects as cache entries go through `NamedObjects`). Each pass takes the
lookahead [consumed, consumed + depth), publishes its objects in order of need to the cache when the cache has a
limit (it evicts by Belady's rule: furthest next use, or none, first; an unlimited cache never evicts and is told
nothing), fetches the heads it spills into, and downloads the objects in order of need. A download that would
evict something needed sooner is left for later: the thread waits for the loop to advance.

Between passes the thread sleeps until the loop reaches the step at which an object not known to be cached
enters the lookahead: a warm epoch costs a pass per chunk of steps, not one per step (measured over a warm
1,023-step epoch: 8-9 ms of this thread's CPU, against 43-63 ms for a thread woken every step that walked each
step's entries in Python, and ~130 ms for the loop itself, which waits for the GIL meanwhile). With a limit it
also wakes every depth/8 steps, so that its published lookahead stays fresh for the other processes' evictions,
and every RECHECK_S (other processes evict too). Objects known to be cached are not looked at again while they stay in
the lookahead (with a limit; for the epoch without): one evicted meanwhile is fetched by the reader on demand.
Told how many objects the dataset has (ids 0 .. n - 1; TokenWindows' shards), `start` first looks whether an
unlimited cache holds them all (a listing per folder): then no thread starts, and a warm epoch reads no order.
Errors are left to the reader, who meets the same object on demand and reports it (a prefetch failure is never
fatal by itself).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

import numpy as np
from sdl.loader.errors import SdlError
from sdl.loader.storage.cache import CacheEntry, ShardCache

RECHECK_S = 0.5
NEVER = 1 << 62
_ids = itertools.count()


def first_use_order(object_ids: np.ndarray) -> list[int]:
    """The distinct ids of `object_ids` (-1: none) in order of first appearance."""
    object_ids = object_ids[object_ids >= 0]
    distinct, first = np.unique(object_ids, return_index=True)
    return distinct[np.argsort(first)].tolist()


class Lookahead:
    """The needs of steps [start, produced), flattened: one (step, object) and one (step, head) pair per sample."""

    def __init__(self, needs: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
        self.needs, self.produced, self.exhausted = needs, 0, False
        empty = np.empty(0, dtype=np.int64)
        self.steps, self.objects, self.head_steps, self.heads = empty, empty, empty, empty

    def pull(self, until: int, drop_before: int) -> None:
        """Read chunks of steps until step `until` is known (or the epoch ends); forget steps before `drop_before`."""
        parts = [(self.steps, self.objects, self.head_steps, self.heads)]
        while not self.exhausted and self.produced < until:
            chunk = next(self.needs, None)
            if chunk is None:
                self.exhausted = True
                break
            objects, heads = (np.asarray(a, dtype=np.int64) for a in chunk)
            steps = np.arange(self.produced, self.produced + len(objects), dtype=np.int64)
            object_steps, head_steps = (np.repeat(steps, a.shape[1]) for a in (objects, heads))
            read, spill = objects.reshape(-1) >= 0, heads.reshape(-1) >= 0
            parts.append((object_steps[read], objects.reshape(-1)[read], head_steps[spill], heads.reshape(-1)[spill]))
            self.produced += len(objects)
        keep, keep_heads = (int(np.searchsorted(s, drop_before)) for s in (parts[0][0], parts[0][2]))
        if len(parts) == 1 and keep == keep_heads == 0:
            return
        parts[0] = (parts[0][0][keep:], parts[0][1][keep:], parts[0][2][keep_heads:], parts[0][3][keep_heads:])
        self.steps, self.objects, self.head_steps, self.heads = (np.concatenate(p) for p in zip(*parts))

    def window(self, first: int, stop: int) -> tuple[slice, slice]:
        """The slices of `objects` and `heads` that steps [first, stop) need."""
        lo, hi = np.searchsorted(self.steps, (first, stop))
        head_lo, head_hi = np.searchsorted(self.head_steps, (first, stop))
        return slice(int(lo), int(hi)), slice(int(head_lo), int(head_hi))


class NamedObjects:
    """Ids for a dataset that names the objects a batch reads as cache entries (`entries_for(sample_ids)`, as
    ArrowRows and ZarrSamples in a store do), so that the prefetcher's arrays can hold them (a Python call per step)."""

    def __init__(self, entries_for: Callable[[list[int]], list[CacheEntry]]) -> None:
        self.entries_for, self.ids, self.entries = entries_for, {}, []

    def needs_of(self, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = [[self._id(entry) for entry in self.entries_for(row)] for row in np.asarray(sample_ids).tolist()]
        objects = np.full((len(rows), max(map(len, rows), default=0)), -1, dtype=np.int64)
        for k, row in enumerate(rows):
            objects[k, :len(row)] = row
        return objects, np.empty((len(rows), 0), dtype=np.int64)

    def entry_of(self, object_id: int) -> CacheEntry:
        return self.entries[object_id]

    def _id(self, entry: CacheEntry) -> int:
        found = self.ids.get(entry)
        if found is None:
            found = self.ids[entry] = len(self.entries)
            self.entries.append(entry)
        return found


class Prefetcher:
    """Fetches the objects steps [consumed, consumed + depth) need, from `needs` (per chunk of consecutive steps:
    [steps, width] arrays of object ids and of spilled-into head ids, -1 for none) and `entry_of(object_id)`;
    `fetch_head(object_id)` (optional) reads an object's head ahead of the windows that spill into it."""

    def __init__(self, cache: ShardCache, needs: Iterator[tuple[np.ndarray, np.ndarray]],
                 entry_of: Callable[[int], CacheEntry], depth: int,
                 fetch_head: Callable[[int], None] | None = None, num_objects: int | None = None) -> None:
        self.cache, self.entry_of, self.fetch_head, self.num_objects = cache, entry_of, fetch_head, num_objects
        self.depth = max(1, int(depth))
        self.consumed = 0  # written by the loop's thread only
        self.error: SdlError | None = None
        self.passes = 0  # passes over the lookahead so far
        self.idle = False  # set by start() when there is nothing to fetch
        self.ready_through = 0  # steps [consumed, ready_through) were fetched (objects and heads) by the last pass
        self._ahead = Lookahead(needs)
        self._name = f"prefetch{next(_ids)}"
        self._refill = max(1, self.depth // 8) if cache.limit is not None else NEVER
        self._published: set[int] | None = None
        self._known: set[int] = set()  # objects known to be in the cache
        self._heads_done: set[int] = set()  # heads read, or whose object is cached
        self._wake_at = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"sdl-{self._name}", daemon=True)

    def start(self) -> Prefetcher:
        if self._all_cached():  # a warm epoch: no thread (starting one waits until it is scheduled: ~1 ms, loaded)
            self.ready_through = self._wake_at = NEVER  # so advance() never tries to wake it
            self.idle = True  # nothing started or published: the loop need not call advance() or close()
            return self
        self._thread.start()
        return self

    def advance(self, steps: int = 1) -> None:
        """The loop consumed `steps` more steps. Wakes the thread only at the step it asked for: `consumed` is
        written before `_wake_at` is read, and the thread writes `_wake_at` before it reads `consumed` (under
        the GIL, in that order), so no wake-up is lost."""
        self.consumed += steps
        if self.consumed >= self._wake_at:
            with self._cond:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=self.cache.client.timeout_s + 5)
        self.cache.withdraw(self._name)

    def _run(self) -> None:
        try:
            while not self._stop:
                consumed = self.consumed
                self._ahead.pull(consumed + self.depth, drop_before=consumed)
                wake_at = self._pass(consumed)
                with self._cond:
                    self._wake_at = wake_at
                    self._cond.wait_for(lambda at=wake_at: self._stop or self.consumed >= at, timeout=RECHECK_S)
        except SdlError as exc:
            self.error = exc

    def _all_cached(self) -> bool:
        """Whether an unlimited cache holds every object the dataset has (ids 0 .. num_objects - 1, when known): a warm
        epoch. Such a cache never evicts, so there is nothing to fetch (measured: the thread's 5 passes over a warm
        1,023-step epoch, 8-9 ms of CPU, took 1,500-1,800 GIL hand-overs and 4-12% of the epoch)."""
        if self.cache.limit is not None or self.num_objects is None:
            return False
        return self.cache.holds_all(self.entry_of(object_id) for object_id in range(self.num_objects))

    def _pass(self, consumed: int) -> int:
        """Publish and fetch the lookahead in order of need; the step at which to look again."""
        self.passes += 1
        objects, heads = self._ahead.window(consumed, consumed + self.depth)
        ordered = first_use_order(self._ahead.objects[objects])
        if self.cache.limit is not None:
            self._known &= set(ordered)  # out of the lookahead, an object may be evicted: check it when it returns
            self._publish(ordered)
        if self.fetch_head is not None:
            spilled = first_use_order(self._ahead.heads[heads])
            self._heads_done &= set(spilled)  # the reader keeps a few hundred heads: read one again when it returns
            for object_id in spilled:
                if self._stop:
                    return NEVER
                if object_id not in self._heads_done:
                    if object_id not in self._known and not self.cache.contains(self.entry_of(object_id)):
                        self.fetch_head(object_id)  # the reader reads a cached object's head from the cache
                    self._heads_done.add(object_id)
        for position, object_id in enumerate(ordered):
            if self._stop:
                return NEVER
            if object_id in self._known:
                continue
            entry = self.entry_of(object_id)
            if not self.cache.contains(entry) and not self.cache.prefetch(entry, next_use=position + 1):
                return consumed + max(1, self.depth // 8)  # blocked: try again once the loop has moved on
            self._known.add(object_id)
        self.ready_through = consumed + self.depth
        return min(self._next_need(consumed, objects.stop, heads.stop), consumed + self._refill)

    def _next_need(self, consumed: int, objects_from: int, heads_from: int) -> int:
        """The step at which the lookahead first reaches an object not known to be cached (or a head not read),
        among the steps read so far; the end of those steps when there is none. Without a limit, the objects
        further ahead that are cached are found here (a stat each) and never looked at again this epoch."""
        ahead = self._ahead
        later, heads = ahead.objects[objects_from:], ahead.heads[heads_from:]
        if self.cache.limit is None:  # nothing is evicted: what is cached now stays cached
            for object_id in first_use_order(np.concatenate((later, heads))):
                if object_id not in self._known and self.cache.contains(self.entry_of(object_id)):
                    self._known.add(object_id)
        steps = [ahead.produced if not ahead.exhausted else NEVER]
        for needed, at, done in ((later, ahead.steps[objects_from:], self._known),
                                 (heads if self.fetch_head is not None else heads[:0], ahead.head_steps[heads_from:],
                                  self._known | self._heads_done)):
            distinct, first = np.unique(needed, return_index=True)
            pending = [k for k, object_id in enumerate(distinct.tolist()) if object_id not in done]
            if pending:
                steps.append(int(at[first[pending].min()]))
        return max(consumed + 1, min(steps) - self.depth + 1)

    def _publish(self, ordered: list[int]) -> None:
        """The lookahead's names in order of need, for the cache's evictions: a file write only when the set of
        them changes (measured: ~75 µs to 4 ms a write)."""
        if set(ordered) != self._published:
            self.cache.publish(self._name, [self.entry_of(object_id).name for object_id in ordered])
            self._published = set(ordered)
