"""Opened sources, per process: an LRU of memory maps, zarr arrays or Arrow tables, and a batch's grouping by source."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from sdl.loader.errors import InputError


class OpenSources:
    """An LRU of opened sources (memory maps, zarr arrays, Arrow tables), at most `max_open`, per process.

    Datasets keep one and drop it when pickled (`__getstate__`), so each DataLoader worker opens its own.
    """

    def __init__(self, max_open: int, open_source: Callable[[int], Any]) -> None:
        if max_open < 1:
            raise InputError(f"max_open is {max_open}, expected at least 1")
        self.max_open, self.open_source, self.items = max_open, open_source, OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def get(self, source_id: int) -> Any:
        item = self.items.get(source_id)
        if item is None:
            item = self.items[source_id] = self.open_source(source_id)
            if len(self.items) > self.max_open:
                self.items.popitem(last=False)
        else:
            self.items.move_to_end(source_id)
        return item


def group_by_source(source_ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """[(source_id, batch positions)] for a batch's source ids, each source once, in source order."""
    order = np.argsort(source_ids, kind="stable")
    sorted_ids = source_ids[order]
    cuts = np.flatnonzero(np.diff(sorted_ids)) + 1
    if not len(order):
        return []
    return list(zip(sorted_ids[np.r_[0, cuts]].tolist(), np.split(order, cuts)))
