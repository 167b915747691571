"""Tiny deterministic corpora for the prepare tests, a reader that splits a token dataset back into documents, and a
progress callback that stops a run where a kill would."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

WORDS = ["the", "data", "loader", "tökens", "shard", "ünïcode", "✓", "résumé", "def", "return", "  ", "\n", "naïve", "数据", "x=1;"]


def make_texts(num_docs: int, seed: int = 0, max_words: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_words))) for i in range(num_docs)]


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def read_dataset(out: Path) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """(all tokens, each document's tokens, manifest dict) of a prepared dataset."""
    manifest = json.loads((out / "manifest.json").read_text())
    tokens, starts, offset = [], [], 0
    for shard in manifest["shards"]:
        array = np.load(out / shard["file"])
        assert str(array.dtype) == manifest["dtype"]
        tokens.append(array)
        starts.append(np.load(out / shard["docs_file"]) + offset)
        offset += len(array)
    stream = np.concatenate(tokens)
    bounds = list(np.concatenate(starts)) + [len(stream)]
    return stream, [stream[a:b] for a, b in zip(bounds[:-1], bounds[1:])], manifest


def dataset_bytes(out: Path) -> dict[str, bytes]:
    """Every data file of a dataset (shards, docs, manifest), for byte-identity checks."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


class Interrupt(Exception):
    pass


def stop_after(num_shards: int):
    """A progress callback that stops prepare (raises Interrupt) once `num_shards` shards are journalled."""
    def progress(p):
        if p.num_shards >= num_shards:
            raise Interrupt
    return progress
