"""Shared fixtures: self-describing synthetic data (token at global position p is p % vocab)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def token_dataset(tmp_path):
    """Factory: a self-describing token dataset (token at global position p is p % vocab_size)."""
    from sdl.prepare.synthetic import write_synthetic_dataset

    def make(num_tokens=10_000, tokens_per_shard=1_000, vocab_size=50257, dtype=None, name="tokens"):
        path = tmp_path / name
        write_synthetic_dataset(path, num_tokens=num_tokens, tokens_per_shard=tokens_per_shard,
                                vocab_size=vocab_size, dtype=dtype, doc_len=97)
        return path

    return make
