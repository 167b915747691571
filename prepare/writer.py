"""The fixed-size shard writer: one token stream in, `shard-NNNNNN.npy` files of exactly `tokens_per_shard` tokens out.

Each shard is written atomically (temporary name, fsync, rename) beside its `.docs.npy` (int64 offsets
of the documents that start in it); the caller journals after each shard using the `Boundary` it gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sdl.loader.format.atomic import atomic_write
from sdl.loader.format.tokens import ShardInfo, docs_name, file_checksum, shard_name


@dataclass(frozen=True, kw_only=True, slots=True)
class Boundary:
    """A shard just written, and where the cut fell in the batch being added.

    `docs_done`: documents of that batch whose tokens are all in written shards. `carry`: tokens of the
    next document (index `docs_done`) already written; 0 when the cut fell between documents.
    """

    shard: ShardInfo
    docs_done: int
    carry: int


def write_npy(path: Path, array: np.ndarray) -> str:
    """Write `array` as a .npy file atomically; return its checksum (sha256 of the whole file)."""
    atomic_write(path, lambda handle: _write_array(handle, np.ascontiguousarray(array)))
    return file_checksum(path)


def _write_array(handle: BinaryIO, array: np.ndarray) -> None:
    """The bytes np.save writes, the data written through `handle`: a full disk is then an OSError with its errno
    (ENOSPC), where numpy's own write said only "9973 requested and 4032 written"."""
    np.lib.format.write_array_header_1_0(handle, np.lib.format.header_data_from_array_1_0(array))
    handle.write(memoryview(array).cast("B"))


class ShardWriter:
    def __init__(self, out: str | Path, *, tokens_per_shard: int, dtype: str, next_shard_id: int = 0) -> None:
        self.out = Path(out)
        self.tokens_per_shard = tokens_per_shard
        self.shard_id = next_shard_id
        self._buffer = np.empty(tokens_per_shard, dtype=dtype)
        self._fill = 0
        self._doc_starts: list[np.ndarray] = []

    def add(self, tokens: np.ndarray, lengths: np.ndarray, skip: int = 0) -> list[Boundary]:
        """Append documents (`tokens` concatenated, `lengths` each), leaving out the first `skip` tokens
        (already written before a resume; the first document's start is then not recorded again)."""
        ends = np.cumsum(lengths)
        starts = ends - lengths
        new_starts = starts[(starts >= skip) & (lengths > 0)]
        boundaries = []
        pos = skip
        while pos < len(tokens):
            take = min(self.tokens_per_shard - self._fill, len(tokens) - pos)
            self._buffer[self._fill:self._fill + take] = tokens[pos:pos + take]
            here = new_starts[(new_starts >= pos) & (new_starts < pos + take)]
            self._doc_starts.append(here - pos + self._fill)
            self._fill += take
            pos += take
            if self._fill == self.tokens_per_shard:
                shard = self._flush()
                docs_done = int(np.searchsorted(ends, pos, side="right"))
                carry = pos - int(starts[docs_done]) if docs_done < len(lengths) else 0
                boundaries.append(Boundary(shard=shard, docs_done=docs_done, carry=carry))
        return boundaries

    def finish(self) -> ShardInfo | None:
        """Write the last, shorter shard (if any tokens remain)."""
        return self._flush() if self._fill else None

    def _flush(self) -> ShardInfo:
        doc_starts = np.concatenate(self._doc_starts) if self._doc_starts else np.zeros(0, dtype=np.int64)
        write_npy(self.out / docs_name(self.shard_id), doc_starts.astype(np.int64))
        checksum = write_npy(self.out / shard_name(self.shard_id), self._buffer[:self._fill])
        shard = ShardInfo(file=shard_name(self.shard_id), num_tokens=self._fill, num_docs=len(doc_starts),
                          checksum=checksum, docs_file=docs_name(self.shard_id))
        self.shard_id += 1
        self._fill = 0
        self._doc_starts = []
        return shard
