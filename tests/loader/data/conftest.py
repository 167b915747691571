"""Fixtures of the mixture tests."""

import pytest
from sdl.loader import TokenWindows


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three tiny token datasets, "web", "code", "math": 249, 87 and 49 windows of 8 tokens."""
    from sdl.prepare.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("mix")
    out = {}
    for name, tokens in (("web", 2_000), ("code", 700), ("math", 400)):
        write_synthetic_dataset(root / name, num_tokens=tokens, tokens_per_shard=300, vocab_size=1000, doc_len=97)
        out[name] = TokenWindows(root / name, seq_len=8)
    return out
