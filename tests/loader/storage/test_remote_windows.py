"""TokenWindows over s3:// on a real S3 server (moto): same samples and identity as local, opened from one request,
an epoch through a cache of ~30% of the dataset that never exceeds its limit, a checksum mismatch fetched twice
then refused, a server gone mid-epoch ending in one clear error."""

from __future__ import annotations

import threading
import time

import boto3
import numpy as np
import pytest
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import ConfigError, StorageError
from sdl.loader.index.remote import open_remote_index
from sdl.loader.storage import RemoteFiles, tree_bytes

SHARD = 32_768  # tokens (64 KiB as uint16), 40 shards: a 2.6 MB dataset


def batches_equal(remote: TokenWindows, local: TokenWindows, ids: list[int]) -> None:
    got, want = remote.__getitems__(ids), local.__getitems__(ids)
    for key in ("input_ids", "labels", "sample_ids"):
        assert np.array_equal(got[key].numpy(), want[key].numpy()), key


def count_requests(files: RemoteFiles) -> list[str]:
    """Every request the client sends, by operation name (a listener on the real client; nothing replaced)."""
    seen: list[str] = []
    files.client.client.meta.events.register("before-call.s3", lambda model, **_: seen.append(model.name))
    return seen


def test_windows_from_s3_equal_local_and_open_in_one_request(s3_dataset, tmp_path):
    local, url = s3_dataset(num_tokens=10_000, tokens_per_shard=1_000, vocab_size=5_000)
    files = RemoteFiles(url, cache_dir=tmp_path / "cache")
    seen = count_requests(files)
    index = open_remote_index(url, files)
    assert seen == ["GetObject"]  # the manifest; no listing, no HEAD per shard
    remote, here = TokenWindows(url, seq_len=64, stride=50, cache_dir=tmp_path / "cache"), TokenWindows(local, seq_len=64, stride=50)
    assert index.identity == remote.index.identity == here.index.identity  # a loader state moves between the two
    assert len(remote) == len(here) and remote.identity == here.identity
    batches_equal(remote, here, list(range(len(here))))
    assert remote[7]["input_ids"].tolist() == here[7]["input_ids"].tolist()


def test_an_epoch_through_a_cache_of_30_percent(s3_dataset, tmp_path):
    local, url = s3_dataset(num_tokens=40 * SHARD, tokens_per_shard=SHARD, vocab_size=60_000)
    size = tree_bytes(local)
    limit, cache = int(0.3 * size), tmp_path / "cache"
    ds = TokenWindows(url, seq_len=512, cache_dir=cache, cache_limit=limit, prefetch_steps=8)
    here = TokenWindows(local, seq_len=512)
    loader = make_loader(ds, batch_size=16, shuffle="locality", block_size=64, window_blocks=2, num_workers=0,
                         rank=0, world_size=1, device="cpu", drop_last=False)
    sizes, done = [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            sizes.append(tree_bytes(cache))
            time.sleep(0.002)

    padded = loader.plan().padded
    sampler = threading.Thread(target=sample)
    sampler.start()
    seen = []
    try:
        for batch in loader:
            ids = batch["sample_ids"].tolist()
            batches_equal(ds, here, ids)
            seen += ids
            sizes.append(tree_bytes(cache))
    finally:
        done.set()
        sampler.join()
    assert sorted(seen[:len(seen) - padded]) == list(range(len(here)))  # exactly once; the tail padded by wrapping
    assert len(sizes) > 100 and max(sizes) <= limit
    shard_bytes = sum(p.stat().st_size for p in local.rglob("shard-*.npy"))
    assert ds.remote.cache.stats.bytes_fetched >= shard_bytes  # every shard came from the store at least once


def test_corrupt_object_fetched_twice_then_a_clear_error(s3_dataset, tmp_path):
    local, url = s3_dataset(num_tokens=4_000, tokens_per_shard=1_000, vocab_size=5_000)
    bucket, key = url[5:].split("/", 1)[0], "tokens/shard-000002.npy"
    client = boto3.client("s3")
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[-1] ^= 0xFF  # one token changed: same size, another checksum
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    ds = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache")
    seen = count_requests(ds.remote)
    assert ds[0]["input_ids"][0] == 0  # the other shards still read
    with pytest.raises(StorageError, match=rf"s3://{bucket}/{key}: checksum sha256:\w+, the object read twice gives sha256:"):
        ds[25]
    assert seen.count("GetObject") == 3  # shard 0 once, shard 2 twice
    leftovers = [p.name for p in (tmp_path / "cache").rglob("shard-000002*")]
    assert leftovers == []  # nothing partial or corrupt is ever visible in the cache


def test_a_cache_smaller_than_a_shard_is_refused(s3_dataset, tmp_path):
    _, url = s3_dataset(num_tokens=4_000, tokens_per_shard=1_000, vocab_size=5_000)
    ds = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache", cache_limit=10_000)
    with pytest.raises(ConfigError, match="cache_limit is 10,000 bytes, too small for one object"):
        ds[0]


def test_server_down_mid_epoch_ends_in_one_clear_error(token_dataset, tmp_path, own_s3_server, s3_upload):
    endpoint, stop = own_s3_server
    boto3.client("s3").create_bucket(Bucket="down")
    url = s3_upload(token_dataset(num_tokens=20 * 1_000, tokens_per_shard=1_000, vocab_size=5_000), "down", "ds")
    ds = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache", prefetch_steps=1, storage_timeout_s=2.0)
    loader = make_loader(ds, batch_size=2, shuffle="none", num_workers=0, rank=0, world_size=1, device="cpu")
    batches = iter(loader)
    first = next(batches)
    assert first["input_ids"][0, 0] == 0
    stop()
    began = time.monotonic()
    with pytest.raises(StorageError) as caught:
        for _ in batches:
            pass
    message = str(caught.value)
    assert message.startswith("s3://down/ds/shard-") and f"no connection to the store at {endpoint} (" in message
    assert time.monotonic() - began < 30  # bounded (a few quick attempts, twice at most: prefetcher, then reader), no hang


def test_the_part_file_of_a_killed_download_is_reclaimed(s3_dataset, tmp_path):
    import subprocess
    import sys

    from sdl.loader.storage.cache import METADATA_BYTES

    _, url = s3_dataset(num_tokens=4_000, tokens_per_shard=1_000, vocab_size=5_000)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    cache, limit = tmp_path / "cache", METADATA_BYTES + 2 * (4_096 + 2_000)
    leftover = cache / "host" / "bucket" / f"shard-000009.abc.npy.part-{dead}-1"  # a download killed by kill -9
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\0" * 10_000)
    ds = TokenWindows(url, seq_len=100, cache_dir=cache, cache_limit=limit, storage_timeout_s=2.0)
    assert ds[0]["input_ids"].tolist() == list(range(100))  # room made by reclaiming the dead reservation
    assert not leftover.exists() and tree_bytes(cache) <= limit
