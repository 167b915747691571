"""ArrowRows and ZarrSamples over s3:// on a real S3 server (moto): the same rows, samples and identity as the local
copy, an epoch through make_loader exactly once, objects read through the node cache, one-line errors naming the
object and the endpoint."""

from __future__ import annotations

import boto3
import numpy as np
import pytest
import torch
from sdl.loader import make_loader
from sdl.loader.data.arrow_rows import ArrowRows
from sdl.loader.data.zarr_samples import ZarrSamples
from sdl.loader.errors import FormatError, InputError, StorageError


def save_arrow(folder, num_rows=60, num_shards=3):
    import datasets

    ds = datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(num_rows)], "n": list(range(num_rows)),
                                     "score": [i / 2 for i in range(num_rows)]})
    ds.save_to_disk(str(folder), num_shards=num_shards)
    return folder


def write_zarr(root, lengths=(5, 3, 7)):
    import zarr

    start = 0
    for i, n in enumerate(lengths):
        group = zarr.open_group(str(root / f"run{i}.zarr"), mode="w")
        images = group.create_array("images", shape=(n, 2, 3), chunks=(2, 2, 3), dtype="float32")
        images[:] = np.arange(start, start + n, dtype="float32")[:, None, None] + np.arange(6, dtype="float32").reshape(2, 3)
        labels = group.create_array("labels", shape=(n,), chunks=(4,), dtype="int64")
        labels[:] = np.arange(start, start + n)
        start += n
    return root


def assert_batches_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


def epoch(dataset, **kwargs) -> list[dict]:
    loader = make_loader(dataset, batch_size=4, shuffle=True, seed=3, rank=0, world_size=1, device="cpu", drop_last=False,
                         **kwargs)
    return list(loader), loader.plan().padded


@pytest.fixture
def arrow_pair(tmp_path, s3_bucket, s3_upload):
    local = save_arrow(tmp_path / "saved")
    return local, s3_upload(local, s3_bucket, "rows")


@pytest.fixture
def zarr_pair(tmp_path, s3_bucket, s3_upload):
    local = write_zarr(tmp_path / "z")
    return local, s3_upload(local, s3_bucket, "z")


def test_arrow_rows_from_s3_equal_local(arrow_pair, tmp_path):
    local, url = arrow_pair
    remote, here = ArrowRows(url, cache_dir=tmp_path / "cache"), ArrowRows(local)
    assert len(remote) == len(here) == 60 and remote.identity == here.identity
    assert len(remote.index.sources) == 3 and remote.index.identity == here.index.identity
    assert_batches_equal(remote.__getitems__(list(range(60))), here.__getitems__(list(range(60))))
    rng = np.random.default_rng(0)
    for _ in range(5):
        ids = rng.integers(0, 60, size=7).tolist()
        assert_batches_equal(remote.__getitems__(ids), here.__getitems__(ids))
    batches, padded = epoch(remote, num_workers=0)
    seen = [i for batch in batches for i in batch["sample_ids"].tolist()]
    assert padded == 0 and sorted(seen) == list(range(60))  # exactly once
    for batch in batches:
        assert_batches_equal({k: v for k, v in batch.items()}, here.__getitems__(batch["sample_ids"].tolist()))
    assert remote.remote.cache.stats.bytes_fetched > 0


def test_zarr_samples_from_s3_equal_local(zarr_pair, tmp_path):
    local, url = zarr_pair
    remote, here = ZarrSamples(url, cache_dir=tmp_path / "cache"), ZarrSamples(local)
    assert len(remote) == len(here) == 15 and remote.identity == here.identity
    assert_batches_equal(remote.__getitems__(list(range(15))), here.__getitems__(list(range(15))))
    batches, padded = epoch(remote, num_workers=1)
    seen = [i for batch in batches for i in batch["sample_ids"].tolist()]
    assert sorted(seen[:len(seen) - padded]) == list(range(15))
    for batch in batches:
        assert_batches_equal(dict(batch), here.__getitems__(batch["sample_ids"].tolist()))


def test_the_prefetcher_is_told_which_objects_a_batch_reads(arrow_pair, zarr_pair, tmp_path):
    rows = ArrowRows(arrow_pair[1], cache_dir=tmp_path / "cache")
    assert [e.key for e in rows.entries_for([59, 0, 1, 40])] == ["rows/data-00002-of-00003.arrow", "rows/data-00000-of-00003.arrow"]
    samples = ZarrSamples(zarr_pair[1], cache_dir=tmp_path / "cache", fields=["images"])
    keys = [e.key for e in samples.entries_for([6, 14, 7])]  # run1 item 1 (band 0), run2 item 6 (band 3), run1 item 2 (band 1)
    assert keys == ["z/run1.zarr/images/c/0/0/0", "z/run2.zarr/images/c/3/0/0", "z/run1.zarr/images/c/1/0/0"]
    assert all(samples.remote.cache.prefetch(entry, next_use=1) for entry in samples.entries_for([6, 14, 7]))
    assert samples.remote.cache.stats.misses == 3 and samples[14]["images"][0, 0] == 14  # read from the cache
    assert samples.remote.cache.stats.misses == 3 + 2  # + the metadata of run2.zarr and run2.zarr/images, cached too


def test_a_missing_object_is_one_line_naming_it_and_the_endpoint(arrow_pair, zarr_pair, tmp_path, s3_server):
    _, url = arrow_pair
    bucket = url[5:].split("/")[0]
    client = boto3.client("s3")
    client.delete_object(Bucket=bucket, Key="rows/data-00001-of-00003.arrow")
    with pytest.raises(FormatError, match=rf"^s3://{bucket}/rows/data-00001-of-00003.arrow: listed by the dataset but not "
                                          rf"in the store at {s3_server}; upload the whole save_to_disk folder again$"):
        ArrowRows(url, cache_dir=tmp_path / "cache")
    samples = ZarrSamples(zarr_pair[1], cache_dir=tmp_path / "cache")
    client.delete_object(Bucket=bucket, Key="z/run2.zarr/labels/c/1")  # gone after the dataset was opened
    assert samples[8]["labels"] == 8
    with pytest.raises(StorageError, match=rf"^s3://{bucket}/z/run2.zarr/labels/c/1: no such object at {s3_server}; "):
        samples[14]
    with pytest.raises(InputError, match=rf"^s3://{bucket}/nothing: no zarr arrays at {s3_server} "):
        ZarrSamples(f"s3://{bucket}/nothing", cache_dir=tmp_path / "cache")


def test_zarr_from_a_server_gone_down_is_one_clear_error_in_bounded_time(tmp_path, own_s3_server, s3_upload):
    import time

    endpoint, stop = own_s3_server
    boto3.client("s3").create_bucket(Bucket="down")
    url = s3_upload(write_zarr(tmp_path / "z"), "down", "z")
    samples = ZarrSamples(url, cache_dir=tmp_path / "cache", storage_timeout_s=1.0)
    stop()
    began = time.monotonic()
    with pytest.raises(StorageError, match=rf"^s3://down/z/run0.zarr/.*: the store at {endpoint} did not answer for 1 s"):
        samples[0]
    assert time.monotonic() - began < 20
