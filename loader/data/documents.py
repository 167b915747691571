"""DocStarts: where the documents of a token dataset start, for document-aware `position_ids`.

Document positions (doc_starts=True) come from the `shard-NNNNNN.docs.npy` files that `sdl prepare`
writes beside the shards (see `sdl.loader.format.tokens`): a document's first token (its BOS when the dataset
has one, else its first text token) has position 0, its EOS the last position, and a document that
starts exactly at a shard boundary is recorded in the next shard at offset 0. A window that begins
inside a document gets that document's true offset at column 0, even when it started many shards
back. `cu_seqlens(position_ids)` gives what varlen attention kernels (FlashAttention's `*_varlen_func`, HF's
packed-sequence attention) take: the int32 boundaries `[0, …, B·L]` of the documents of the flattened batch, cut at
row boundaries (a new segment at every `position_ids == 0` and at every row start), and the longest segment
(`max_seqlen`). Labels get no positions of
their own; their document is that of the input token they follow. Only the per-shard document counts
are read up front (from the manifest); each `.docs.npy` is memory-mapped on first use (an LRU like
the shards'; from an object store it is read whole by one GET into memory: a few bytes per document), and the start of the document running into a shard is found once per shard and
process, from the last entry of the nearest earlier shard in which a document starts. A local docs file whose size or
mtime is not what the index found (`DocsFiles`) is an error naming it when it is mapped, and once a second after.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import ConfigError, FormatError, IndexStaleError
from sdl.loader.format.tokens import (
    MANIFEST_NAME,
    parse_manifest,
    read_manifest,
    read_npy_header,
)
from sdl.loader.index import GlobalIndex, OpenSources, SourceTable
from sdl.loader.storage import RemoteFiles


class DocStarts:
    """Where the documents of a token dataset start, for `position_ids`: O(shards) arrays up front, each
    shard's `.docs.npy` memory-mapped on first use and kept in an LRU of `max_open`."""

    def __init__(self, index: GlobalIndex, max_open: int, remote: RemoteFiles | None = None) -> None:
        root: Any = Path(index.root) if remote is None else remote.url
        shards = (read_manifest(root) if remote is None else parse_manifest(remote.read(MANIFEST_NAME), remote.location.url(MANIFEST_NAME))).shards
        if tuple(shard.file for shard in shards) != index.sources.paths:
            raise IndexStaleError(f"{root}: the manifest lists other shards than the index; run `sdl index {root}` to rebuild it")
        self.root, self.index, self.offsets, self.max_open, self.remote = root, index, index.offsets, max_open, remote
        self.files = tuple(shard.docs_file or shard.file.removesuffix(".npy") + ".docs.npy" for shard in shards)
        self.counts = np.array([shard.num_docs for shard in shards], dtype=np.int64)
        self.lengths = np.diff(index.offsets).tolist()
        _check_docs_files(root, self.files, [shard.docs_file for shard in shards], listing=remote is None)
        recorded = index.meta.get("docs_files") if remote is None else None  # absent from caches written before it
        self.recorded = DocsFiles(root, self.files, recorded) if recorded is not None else None
        with_docs = np.where(self.counts > 0, np.arange(len(shards)), -1)
        self.previous = np.concatenate(([-1], np.maximum.accumulate(with_docs)[:-1]))  # last earlier shard where a document starts
        self._run_ins: dict[int, int] = {}
        self._open = OpenSources(max_open, self._map, self.recorded)

    def position_ids(self, starts: np.ndarray, seq_len: int, dtype: np.dtype) -> np.ndarray:
        """[B, seq_len] positions within their documents of the windows at global tokens `starts`.

        The documents covering a row cut it into segments; in the flat [B * seq_len] output each segment
        counts up from the flat index of its document's first token (for a row's first segment, at or
        before the row's start), so one `np.repeat` of those indices and one subtraction make the batch.
        """
        source_ids, offsets = self.index.locate(starts)
        local: list[int] = []  # each row's covering documents, as offsets from its first token's shard
        counts, heads, deepest = [], [], 0
        for source_id, offset in zip(source_ids.tolist(), offsets.tolist()):
            heads.append(len(local))
            self._covering(source_id, offset, offset + seq_len, local)
            counts.append(len(local) - heads[-1])
            deepest = max(deepest, offset - local[heads[-1]])
        size, rows = len(starts) * seq_len, np.arange(0, len(starts) * seq_len, seq_len)
        firsts = np.repeat(rows - offsets, counts)
        firsts += np.array(local, dtype=np.int64)  # the flat index of each covering document's first token
        bounds = np.empty(len(local) + 1, dtype=np.int64)  # where each segment begins: a row's start for its first
        bounds[:-1], bounds[heads], bounds[-1] = firsts, rows, size
        work = dtype if deepest + size < (2**31 if dtype == np.int32 else 2**63) else np.dtype(np.int64)
        out = np.repeat(firsts.astype(work, copy=False), bounds[1:] - bounds[:-1])
        np.subtract(np.arange(size, dtype=work), out, out=out)
        return out.reshape(len(starts), seq_len).astype(dtype, copy=False)

    def _covering(self, source_id: int, offset: int, end: int, out: list[int]) -> None:
        """Append to `out` the starts of the documents covering tokens [offset, end) of shard `source_id` (the
        first token's document, then those starting inside), as offsets from that shard's first token."""
        docs = self._docs(source_id)
        first = int(docs.searchsorted(offset + 1)) - 1  # the last document starting at or before `offset`
        if first < 0:
            out.append(-self._run_in(source_id))
            first = 0
        if end <= self.lengths[source_id]:  # nearly every window: inside one shard
            out += docs[first:docs.searchsorted(end)].tolist()
            return
        out += docs[first:].tolist()
        shard_start = self.lengths[source_id]
        while shard_start < end:
            source_id += 1
            docs = self._docs(source_id)
            out += (docs[:docs.searchsorted(end - shard_start)] + shard_start).tolist()
            shard_start += self.lengths[source_id]

    def _run_in(self, source_id: int) -> int:
        """Tokens of the document that runs into shard `source_id` from earlier shards (found once per shard)."""
        run_in = self._run_ins.get(source_id)
        if run_in is None:
            previous = int(self.previous[source_id])
            start = 0 if previous < 0 else int(self.offsets[previous]) + int(self._docs(previous)[-1])
            run_in = self._run_ins[source_id] = int(self.offsets[source_id]) - start
        return run_in

    def _docs(self, source_id: int) -> np.ndarray:
        return self._open.get(source_id)

    def _map(self, source_id: int) -> np.ndarray:
        """Shard `source_id`'s document offsets, memory-mapped (read whole from an object store) after checking them
        against the manifest."""
        count = int(self.counts[source_id])
        if self.remote is not None:
            return self._fetch(source_id, count)
        path = self.root / self.files[source_id]
        shape, dtype, header = read_npy_header(path)
        if shape != (count,) or dtype != np.int64 or path.stat().st_size < header + 8 * count:
            raise FormatError(f"{self.files[source_id]} holds {shape} {dtype} document offsets, the manifest says {count:,} "
                              "int64 offsets: the file was replaced or truncated; re-run sdl prepare with the same arguments to rewrite it")
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        return self._in_order(np.memmap(path, dtype=np.int64, mode="r", offset=header, shape=shape).view(np.ndarray), source_id,
                              self.files[source_id], f"run `sdl prepare --repair {self.root}` to rewrite it")

    def _in_order(self, docs: np.ndarray, source_id: int, where: str, fix: str) -> np.ndarray:
        """`docs` once checked to be a shard's document starts: ascending, inside its tokens (damage inside the file,
        which the shape check cannot see, would give wrong position_ids); one pass when the shard is opened."""
        length = self.lengths[source_id]
        if docs.size and (docs[0] < 0 or docs[-1] >= length or bool((docs[1:] < docs[:-1]).any())):
            bad = "negative" if docs[0] < 0 else f"past the shard's {length:,} tokens" if docs[-1] >= length else "out of order"
            raise FormatError(f"{where}: expected ascending document starts inside the shard's {length:,} tokens, found "
                              f"some {bad}: the file is damaged; {fix}")
        return docs

    def _fetch(self, source_id: int, count: int) -> np.ndarray:
        url = self.remote.location.url(self.files[source_id])
        try:
            docs = np.load(io.BytesIO(self.remote.read(self.files[source_id])), allow_pickle=False)
        except ValueError as exc:
            raise FormatError(f"{url}: not a .npy array of document offsets ({exc}); re-upload it from the dataset sdl prepare wrote") from None
        if docs.shape != (count,) or docs.dtype != np.int64:
            raise FormatError(f"{url} holds {docs.shape} {docs.dtype} document offsets, the manifest says {count:,} int64 "
                              "offsets: the object was replaced or truncated; re-upload it from the dataset sdl prepare wrote")
        return self._in_order(docs, source_id, url, "re-upload it from the dataset sdl prepare wrote")

    def detached(self) -> DocStarts:
        """A copy with its own (empty) LRU of open files."""
        other = copy.copy(self)
        other._open, other._run_ins = OpenSources(self.max_open, other._map, self.recorded), dict(self._run_ins)
        return other

    def __getstate__(self) -> dict[str, Any]:  # never ship open memory maps; each process opens its own
        return {key: value for key, value in self.__dict__.items() if key != "_open"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open = OpenSources(self.max_open, self._map, self.recorded)


class DocsFiles:
    """The `.docs.npy` files as the index found them (size, mtime), in the form `check_files` reads (an index of
    them): a docs file changed since is named when it is mapped, and while mapped once a second, as a shard is."""

    def __init__(self, root: Path, files: tuple[str, ...], recorded: dict[str, list[int]]) -> None:
        sizes = np.asarray(recorded["size"], dtype=np.int64)
        if len(sizes) != len(files) or (sizes < 0).any():  # a docs file added (or listed) since the index was built
            raise IndexStaleError(f"{root}: the index records other document starts files than the manifest lists; "
                                  f"run `sdl index {root}` to rebuild it")
        self.root, self.sources = root, SourceTable(files, np.zeros(len(files)), sizes, recorded["mtime_ns"], (None,) * len(files))
        self.changed = ("since the index was built", f"run `sdl index {root} --validate`, which checks it against its "
                        f"shard's tokens and rebuilds the index when it passes")

    def path_of(self, source_id: int) -> Path:
        return self.root / self.sources.paths[source_id]


def _check_docs_files(root: Any, files: tuple[str, ...], listed: list[str | None], listing: bool = True) -> None:
    """Every shard's `.docs.npy` is named in the manifest and (`listing`: a local folder) present: one listing per
    folder, not a stat per file, and string paths (Path objects cost ~60 ms over 10,000 shards). In an object store
    a missing one is named when first read: no listing of the bucket."""
    present: dict[str, set[str]] = {}
    for name, entry in zip(files, listed):
        if not listing:
            if entry is None:
                raise ConfigError(f"doc_starts=True needs the document starts beside every shard, and {root}/{name} is not named "
                                  "in the manifest; re-run sdl prepare (it writes a .docs.npy beside each shard), or use doc_starts=False")
            continue
        folder, _, base = name.rpartition("/")
        if folder not in present:
            where = os.path.join(root, folder)
            present[folder] = set(os.listdir(where)) if os.path.isdir(where) else set()
        if entry is None or base not in present[folder]:
            problem = "is not named in the manifest" if entry is None else "is missing"
            raise ConfigError(f"doc_starts=True needs the document starts beside every shard, and {root / name} {problem}; "
                              "re-run sdl prepare (it writes a .docs.npy beside each shard), or use doc_starts=False")


def cu_seqlens(position_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """(cu_seqlens, max_seqlen) of a [B, L] (or [B, …]) batch of document positions, flattened to [B·L]: int32
    segment boundaries from 0 to B·L — a boundary wherever a document starts and at every row start — and the
    longest segment."""
    rows = position_ids.shape[0]
    flat = position_ids.reshape(-1)
    starts = flat == 0  # a fresh array, safe to mark the row starts in
    if rows:
        starts[::flat.size // rows] = True
    bounds = np.empty(int(starts.sum()) + 1, dtype=np.int32)
    bounds[:-1], bounds[-1] = np.flatnonzero(starts), flat.size
    return bounds, int(np.diff(bounds).max(initial=0))
