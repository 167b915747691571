"""The peer of `sdl bench-prepare --peer litdata`: LitData's `optimize()` on the same JSONL files, same tokenizer, same workers.

LitData is not a dependency of sdl (`pip install litdata` to measure it). The two pipelines see the same
input bytes (the bench corpus split into `NUM_FILES` JSONL files, because `optimize()` parallelises over
whole inputs: one file would leave every worker but one idle), the same tokenizer.json, the same encoding
call (`encode_texts`: `encode_batch_fast` on ~1 MB batches, one Rust thread per process, EOS after each
document) and the same output dtype (uint16 arrays, `TokensLoader`), written to local temp dirs; both are
timed end to end in this process, worker start-up included, and both rates count the tokens written.
What still differs:
- LitData always spawns `num_workers` processes plus its own reader/uploader threads; sdl with
  `num_proc=1` encodes in the calling process (no spawn), with N > 1 it uses a spawned pool of N.
- LitData hands each worker whole files (balanced by size) and writes one chunk series per worker,
  then merges their indexes; sdl sends ~1 MB batches of records to its pool and writes one stream of
  fixed-size shards in input order (byte-identical for any N).
- sdl fsyncs each shard, the manifest and its resume journal, and checksums every shard; LitData
  writes chunks to a cache folder, then moves them to `output_dir`, without fsync or checksums.
- The per-document iteration uses LitData's recipe (a generator yielding one token array per document),
  with sdl's batched encoding inside it rather than the recipe's `tokenizer.encode` per document, so
  the tokenizer does the same work in both and the ratio measures the pipelines.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import ConfigError
from sdl.prepare.encoder import SINGLE_THREAD_ENV, environment
from sdl.prepare.tokenizer import encode_texts, load_tokenizer

PEERS = ("litdata",)
NUM_FILES = 8
BATCH_BYTES = 1 << 20   # PrepareConfig.batch_bytes: the text per encode_batch_fast call in sdl's workers

_worker: dict[str, Any] = {}


def require_peer(peer: str) -> str:
    """The installed version of `peer`, or a ConfigError saying how to install it."""
    if peer not in PEERS:
        raise ConfigError(f"--peer is {peer!r}, expected one of {', '.join(PEERS)}")
    try:
        import litdata
    except ImportError:
        raise ConfigError("--peer litdata needs LitData, which is not installed here; pip install litdata "
                          "(a bench-only install, not a dependency of sdl)") from None
    return str(litdata.__version__)


def split_corpus(corpus: Path, num_files: int) -> list[Path]:
    """`corpus` cut at line boundaries into `num_files` JSONL files of about equal size (same bytes, same order)."""
    target = corpus.stat().st_size / num_files
    paths = [corpus.with_name(f"{corpus.stem}-{i:02d}.jsonl") for i in range(num_files)]
    handles = [open(path, "wb") for path in paths]
    try:
        written = 0
        with open(corpus, "rb") as source:
            for line in source:
                handles[min(int(written // target), num_files - 1)].write(line)
                written += len(line)
    finally:
        for handle in handles:
            handle.close()
    return [path for path in paths if path.stat().st_size > 0]


def tokenize_fn(path: str, tokenizer: str | None = None, eos_id: int | None = None) -> Iterator[np.ndarray]:
    """LitData's tokenization recipe: read one JSONL file, yield each document's ids followed by EOS."""
    if "tokenizer" not in _worker:
        os.environ.update(SINGLE_THREAD_ENV)
        _worker["tokenizer"] = load_tokenizer(tokenizer).build()
    texts: list[str] = []
    size = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size >= BATCH_BYTES:
                yield from _documents(texts, eos_id)
                texts, size = [], 0
    yield from _documents(texts, eos_id)


def _documents(texts: list[str], eos_id: int | None) -> Iterator[np.ndarray]:
    if texts:
        tokens, lengths = encode_texts(_worker["tokenizer"], texts, bos_id=None, eos_id=eos_id, dtype="uint16")
        yield from np.split(tokens, np.cumsum(lengths)[:-1])


def litdata_rate(files: list[Path], out: Path, num_workers: int, tokens_per_chunk: int,
                 tokenizer: str | None = None) -> tuple[float, int]:
    """(tokens/s, tokens written) of one `litdata.optimize()` run over `files` into `out` with `num_workers` workers."""
    from litdata import TokensLoader, optimize

    spec = load_tokenizer(tokenizer)
    assert spec.vocab_size <= 2**16, "the bench writes uint16 in both pipelines"
    caches = {"DATA_OPTIMIZER_CACHE_FOLDER": str(out.with_name(out.name + "-cache")),
              "DATA_OPTIMIZER_DATA_CACHE_FOLDER": str(out.with_name(out.name + "-data-cache"))}
    with environment({**caches, **SINGLE_THREAD_ENV}):
        started = time.perf_counter()
        optimize(fn=partial(tokenize_fn, tokenizer=tokenizer, eos_id=spec.eos_id), inputs=[str(f) for f in files],
                 output_dir=str(out), chunk_size=tokens_per_chunk, item_loader=TokensLoader(), num_workers=num_workers,
                 start_method="spawn", verbose=False)
        seconds = time.perf_counter() - started
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    num_tokens = sum(chunk["dim"] for chunk in index["chunks"])
    return num_tokens / seconds, num_tokens
