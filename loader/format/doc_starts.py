"""Where a shard's documents may start, given its tokens: the law its `.docs.npy` obeys (see `sdl.loader.format.tokens`).

`sdl prepare` writes each document as [BOS] ids [EOS] (BOS when the manifest says `prepend_bos`, EOS when it says
`append_eos`), and records in a shard's `.docs.npy` the offset of each document's first token. So a recorded start
holds the BOS id when the dataset prepends one; else it follows the EOS id that ends the document before (or is the
first token of its stream: of the dataset, or of a job folder's part of a joined one, whose last token is an EOS as
well). The manifest records no checksum of a docs file: this law is what `sdl index --validate` and
`sdl prepare --repair` check one against, reading the shard's tokens. The converse does not hold (an EOS id may
stand inside a document's text), and a dataset with neither BOS nor EOS leaves nothing to check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def misplaced_start(starts: np.ndarray, tokens: np.ndarray, before: int | None, manifest: Any) -> str | None:
    """Why the first misplaced start of `starts` (a shard's document starts, checked to lie inside `tokens`) cannot be
    where a document begins, or None when every one can. `before`: the token just before the shard in its stream, None
    when unknown or at a stream's start (a start at offset 0 is then not checked)."""
    bos, eos = manifest.tokenizer.get("bos_id"), manifest.tokenizer.get("eos_id")
    starts = np.asarray(starts, dtype=np.int64)
    if manifest.prepend_bos and bos is not None:
        bad = np.flatnonzero(tokens[starts] != bos)
        return f"a document starting at offset {int(starts[bad[0]]):,} on token {int(tokens[starts[bad[0]]])}, not the BOS id {bos}" \
            if len(bad) else None
    if not (manifest.append_eos and eos is not None):
        return None
    previous = tokens[np.maximum(starts - 1, 0)]
    follows = np.where(starts > 0, previous == eos, before is None or before == eos)
    bad = np.flatnonzero(~follows)
    if not len(bad):
        return None
    start = int(starts[bad[0]])
    token = int(previous[bad[0]]) if start else before
    return f"a document starting at offset {start:,} after token {token}, not after the EOS id {eos}"


def starts_problem(starts: np.ndarray, shard: Any, manifest: Any, tokens: np.ndarray | None,
                   before: int | None) -> tuple[str, str] | None:
    """(expected, found) when `starts` (a shard's loaded `.docs.npy`) cannot be its docs file: not `num_docs` integer
    offsets increasing inside the shard, or, given the shard's `tokens` (intact), one where no document of them can
    begin (`misplaced_start`); None when they can. What `sdl index --validate` and `sdl prepare --repair` check."""
    if starts.ndim != 1 or len(starts) != shard.num_docs:
        return f"{shard.num_docs:,} document offsets (manifest)", f"shape {starts.shape}"
    if starts.dtype.kind not in "iu":
        return f"{shard.num_docs:,} integer document offsets", f"dtype {starts.dtype}"
    if len(starts) and (starts.min() < 0 or starts.max() >= max(shard.num_tokens, 1) or np.any(np.diff(starts) <= 0)):
        return (f"increasing offsets in [0, {shard.num_tokens:,})",
                f"offsets from {int(starts.min())} to {int(starts.max())}, not all increasing")
    misplaced = misplaced_start(starts, tokens, before, manifest) if tokens is not None and len(starts) else None
    return (f"each document start where a document of {shard.file} begins", misplaced) if misplaced else None


def docs_problem(path: Path, shard: Any, manifest: Any, tokens: np.ndarray | None, before: int | None) -> tuple[str, str] | None:
    """`starts_problem` of the docs file at `path`, loaded (an unreadable file is a problem too)."""
    try:
        starts = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return f"{shard.num_docs:,} document offsets", f"an unreadable file ({exc})"
    return starts_problem(starts, shard, manifest, tokens, before)
