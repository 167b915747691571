"""A local zarr store read against its index: a chunk that is gone is an error, not fill values.

zarr reads a chunk with no file as the array's fill value, since it does not write chunks that are all fill
value. So a chunk file deleted (or lost) after `sdl index` would be read as zeros, silently. The index records which
chunks were absent when it was built (`meta["absent_chunks"]`, `sdl.loader.index.zarr`); `IndexedLocalStore`
answers a missing chunk that is not among them with a FormatError naming the store, the array and the chunk. (An
object store's dataset fails the same way: its store answers from the listing it was opened with.)
"""

from __future__ import annotations

from pathlib import Path
from sdl.loader.errors import FormatError
from sdl.loader.index.zarr import zarr_node
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore

METADATA_KEYS = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


class IndexedLocalStore(LocalStore):
    """Store `name` (its folder inside the dataset `dataset`), read-only: a plain array, or a group of `fields`;
    `recorded`: the index's `absent_chunks` ({"store" or "store/array": chunk keys absent when it was built})."""

    def __init__(self, dataset: Path, name: str, fields: list[str], recorded: dict[str, list[str]]) -> None:
        super().__init__(dataset / name, read_only=True)
        node = zarr_node(dataset / name)
        self.name, self.dataset = name, dataset
        self.arrays = ("",) if node is None or node[0] == "array" else tuple(fields)  # array paths inside the store
        self.absent = {path: frozenset(recorded.get(f"{name}/{path}" if path else name, ())) for path in self.arrays}

    async def get(self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None) -> Buffer | None:
        value = await super().get(key, prototype, byte_range)
        if value is None and key.rsplit("/", 1)[-1] not in METADATA_KEYS:
            array, _, chunk = ("", "", key) if self.arrays == ("",) else key.partition("/")
            if array in self.absent and chunk not in self.absent[array]:
                where = f"{self.name}/{array}" if array else self.name
                raise FormatError(f"{self.dataset}/{where}: chunk {chunk!r} was there when the index was built and is gone "
                                  "(zarr would read it as fill values); restore the store, or run `sdl index "
                                  f"{self.dataset}` if the chunk is meant to be all fill value, and resume from the last checkpoint")
        return value
