"""The order-aware prefetcher: a thread that fetches what the next steps need, ahead of the training loop.

The loader's order is computed, so at any cursor the objects of the next `depth` steps are known. The
thread keeps that lookahead (steps the loop has not yet consumed, `depth` of them), publishes it in order of
need to the cache (which evicts by Belady's rule: furthest next use, or none, first), and downloads its
objects in that order. A download that would evict something needed sooner is left for later: the thread
waits for the loop to advance. Errors are left to the reader, who meets the same object on demand and
reports it (a prefetch failure is never fatal by itself).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterator, Sequence

from sdl.loader.errors import SdlError
from sdl.loader.storage.cache import CacheEntry, ShardCache

_ids = itertools.count()


class Prefetcher:
    """Fetches the objects of steps [consumed, consumed + depth) of `steps` (each step: the entries it reads)."""

    def __init__(self, cache: ShardCache, steps: Iterator[Sequence[CacheEntry]], depth: int) -> None:
        self.cache, self.steps, self.depth = cache, steps, max(1, int(depth))
        self.consumed = 0
        self.error: SdlError | None = None
        self._name = f"prefetch{next(_ids)}"
        self._refill = max(1, self.depth // 8)  # steps consumed between two passes: a pass per step costs the loop ~5%
        self._published: set[str] = set()
        self._cached: set[CacheEntry] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"sdl-{self._name}", daemon=True)

    def start(self) -> Prefetcher:
        self._thread.start()
        return self

    def advance(self, steps: int = 1) -> None:
        """The loop consumed `steps` more steps: slide the lookahead."""
        with self._cond:
            self.consumed += steps
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=self.cache.client.timeout_s + 5)
        self.cache.withdraw(self._name)

    def _run(self) -> None:
        window: deque[tuple[int, Sequence[CacheEntry]]] = deque()
        produced, exhausted = 0, False
        try:
            while True:
                with self._cond:
                    if self._stop:
                        return
                    consumed = self.consumed
                while window and window[0][0] < consumed:
                    window.popleft()
                while not exhausted and produced < consumed + self.depth:
                    step = next(self.steps, None)
                    exhausted = step is None
                    if step is not None:
                        window.append((produced, step))
                        produced += 1
                if not self._fill(window):
                    return
                with self._cond:  # wait for the loop to move a few steps (or re-check now and then: other ranks evict too)
                    self._cond.wait_for(lambda: self._stop or self.consumed >= consumed + self._refill, timeout=0.5)
        except SdlError as exc:
            self.error = exc

    def _fill(self, window: deque) -> bool:
        """Publish the lookahead and fetch it in order of need until done or blocked; False once stopped."""
        ordered = list(dict.fromkeys(entry for _, entries in window for entry in entries))
        names = [entry.name for entry in ordered]
        if set(names) != self._published:  # a file write per change of the set, not per step (measured: 1-4 ms each)
            self.cache.publish(self._name, names)
            self._published = set(names)
        for position, entry in enumerate(ordered):
            if self._stop:
                return False
            if entry in self._cached:
                continue
            if not self.cache.contains(entry) and not self.cache.prefetch(entry, next_use=position + 1):
                break
            self._cached.add(entry)  # not checked again while in the lookahead: if evicted meanwhile, the reader fetches it
        self._cached &= set(ordered)
        return True
