"""IndexedSamples: what every per-item dataset over a global index shares (ZarrSamples, ArrowRows).

Sample *i* is item `locate(i)` of the index's sources. Subclasses say which kind they are, what they
select (zarr fields, Arrow columns) and how to open one source; this class keeps the open sources in a
per-process LRU that is dropped when pickled (each DataLoader worker opens its own), and defines the
dataset protocol the loader relies on: `len`, `identity`, `__getitem__` via the batched `__getitems__`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from sdl.loader.data.batch import GatheredBatch
from sdl.loader.errors import InputError
from sdl.loader.index import GlobalIndex, OpenSources


class IndexedSamples:
    kind = ""
    tokens_per_sample = None
    index: GlobalIndex
    selection: tuple[str, ...]
    transform: Callable[[dict], dict] | None
    max_open: int
    sized_sources = False  # the index's source sizes are file sizes: check them against the files (see OpenSources)
    _open: OpenSources | None = None

    @staticmethod
    def select(wanted: Sequence[str] | None, available: Sequence[str], noun: str, where: Any) -> tuple[str, ...]:
        """The chosen names (all when none are asked for); an unknown name is an InputError."""
        chosen = tuple(wanted) if wanted else tuple(available)
        unknown = [name for name in chosen if name not in available]
        if unknown:
            raise InputError(f"{where}: no {noun}(s) {unknown}; the files hold {', '.join(available)}")
        return chosen

    def open_source(self, source_id: int) -> Any:
        raise NotImplementedError

    def source(self, source_id: int) -> Any:
        """Source `source_id`, opened in this process on first use (LRU of `max_open`)."""
        if self._open is None:
            sized = self.sized_sources and getattr(self, "remote", None) is None  # cached objects: checked when fetched
            self._open = OpenSources(self.max_open, self.open_source, self.index if sized else None)
        return self._open.get(source_id)

    def finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch after the transform, as a GatheredBatch (the default collate passes it whole)."""
        return GatheredBatch(self.transform(batch) if self.transform is not None else batch)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_open"} | {"_open": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.index.total

    @property
    def identity(self) -> str:
        definition = json.dumps([self.kind, self.index.identity, self.selection]).encode()
        return hashlib.sha256(definition).hexdigest()[:32]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {name: value[0] for name, value in self.__getitems__([int(i)]).items()}
