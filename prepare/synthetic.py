"""Self-describing synthetic token datasets: the token at global position p is `p % vocab_size`.

Used by `sdl bench` (a dataset of any size, anywhere) and by the tests (the expected content of any
window is computable from its position alone).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from sdl.loader.format.atomic import atomic_write_bytes, atomic_write_json
from sdl.loader.format.tokens import (
    Manifest,
    ShardInfo,
    dtype_for_vocab,
    npy_bytes,
    shard_name,
)


def write_synthetic_dataset(
    out: str | Path, *, num_tokens: int, tokens_per_shard: int, vocab_size: int = 50257,
    dtype: str | None = None, doc_len: int | None = None,
) -> Manifest:
    """Write `num_tokens` tokens (`p % vocab_size`) as a token dataset; a document every `doc_len` tokens."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = dtype or dtype_for_vocab(vocab_size)
    shards = []
    for shard_id, start in enumerate(range(0, num_tokens, tokens_per_shard)):
        stop = min(start + tokens_per_shard, num_tokens)
        tokens = (np.arange(start, stop, dtype=np.int64) % vocab_size).astype(dtype)
        data = npy_bytes(tokens)
        atomic_write_bytes(out / shard_name(shard_id), data)
        num_docs = 0 if not doc_len else len(range(-(-start // doc_len) * doc_len, stop, doc_len))
        shards.append(ShardInfo(file=shard_name(shard_id), num_tokens=stop - start, num_docs=num_docs,
                                checksum="sha256:" + hashlib.sha256(data).hexdigest()))
    tokenizer = {"name": "synthetic", "vocab_size": vocab_size, "eos_id": vocab_size - 1, "bos_id": None, "hash": None}
    manifest = Manifest(dtype=dtype, tokens_per_shard=tokens_per_shard, tokenizer=tokenizer, shards=tuple(shards),
                        sources=({"path": "synthetic", "size": num_tokens, "fingerprint": f"p%{vocab_size}"},))
    atomic_write_json(out / "manifest.json", manifest.to_dict())
    return manifest
