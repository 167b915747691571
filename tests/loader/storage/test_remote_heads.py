"""A window that spills into the next shard of an s3:// dataset reads that shard's head by one ranged GET, which no
hash can check: it is used only from an object that says it is the manifest's (the sha256 `sdl prepare` stores with
every upload). A shard replaced in the store is an error before any batch holds a token of it; a dataset copied
without that metadata (`aws s3 sync`) reads such shards whole, through the checked cache, and gives the same batches."""

from __future__ import annotations

import io

import boto3
import numpy as np
import pytest
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import StorageError


def replace_shard(url: str, shard: int, tokens: np.ndarray, *, with_checksum: bool) -> None:
    """Put another shard of the same size at `shard` of the dataset at `url`, with its own sha256 or none."""
    import hashlib

    bucket, prefix = url[5:].split("/", 1)
    buffer = io.BytesIO()
    np.save(buffer, tokens)
    body = buffer.getvalue()
    extra = {"Metadata": {"sha256": hashlib.sha256(body).hexdigest()}} if with_checksum else {}
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/shard-{shard:06d}.npy", Body=body, **extra)


@pytest.mark.parametrize("with_checksum", [True, False], ids=["replaced-with-its-own-sha256", "replaced-by-another-tool"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_shard_replaced_in_the_store_is_an_error_before_a_batch_holds_its_head(s3_dataset, tmp_path, with_checksum, num_workers):
    local, url = s3_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=5_000)
    replace_shard(url, 1, (np.load(local / "shard-000001.npy") + 7).astype(np.uint16), with_checksum=with_checksum)
    windows = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache")  # window 9 spills into shard 1 by one token
    loader = make_loader(windows, 10, num_workers=num_workers, shuffle=False, device="cpu", rank=0, world_size=1)
    with pytest.raises(StorageError, match=r"s3://.*/shard-000001\.npy: checksum sha256:[0-9a-f]+[, ].*replaced") as raised:
        next(iter(loader))  # samples 0-9: the first batch already holds the head of shard 1
    assert "\n" not in str(raised.value)


def test_a_dataset_copied_without_checksums_reads_spilled_shards_whole_and_gives_the_same_batches(s3_dataset, tmp_path):
    local, url = s3_dataset(num_tokens=5_000, tokens_per_shard=1_000, vocab_size=5_000, checksums=False)
    remote, here = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache"), TokenWindows(local, seq_len=100)
    ids = list(range(len(here)))
    assert np.array_equal(remote.__getitems__(ids)["labels"].numpy(), here.__getitems__(ids)["labels"].numpy())
    assert remote._heads == {} and len(list((tmp_path / "cache").rglob("shard-*.npy"))) == 5  # each checked whole
