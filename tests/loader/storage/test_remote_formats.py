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
from sdl.loader.storage import tree_bytes


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # where the rows of remote Arrow files are recorded


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


def test_arrow_rows_from_s3_equal_local(s3_arrow, tmp_path):
    local, url = s3_arrow
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


def test_arrow_through_a_cache_of_one_file_and_reopened_without_a_fetch(s3_arrow, tmp_path):
    from sdl.loader.storage.cache import METADATA_BYTES

    local, url = s3_arrow
    sizes = sorted(p.stat().st_size for p in local.glob("*.arrow"))
    limit, cache = METADATA_BYTES + sizes[-1] + sizes[0] // 2, tmp_path / "cache"  # room for one file
    remote, here = ArrowRows(url, cache_dir=cache, cache_limit=limit), ArrowRows(local)
    assert remote.remote.cache.stats.bytes_fetched == sum(sizes)  # the first open counts the rows of every file
    loader = make_loader(remote, batch_size=4, shuffle=True, seed=5, rank=0, world_size=1, device="cpu", num_workers=0)
    seen, used = [], []
    for batch in loader:
        assert_batches_equal(dict(batch), here.__getitems__(batch["sample_ids"].tolist()))
        seen += batch["sample_ids"].tolist()
        used.append(tree_bytes(cache))
    assert sorted(seen) == list(range(60)) and max(used) <= limit
    again = ArrowRows(url, cache_dir=cache, cache_limit=limit)
    assert again.remote.cache.stats.bytes_fetched == 0 and again.identity == here.identity  # rows from the node's records


def test_zarr_samples_from_s3_equal_local(s3_zarr, tmp_path):
    local, url = s3_zarr
    remote, here = ZarrSamples(url, cache_dir=tmp_path / "cache"), ZarrSamples(local)
    assert len(remote) == len(here) == 15 and remote.identity == here.identity
    assert_batches_equal(remote.__getitems__(list(range(15))), here.__getitems__(list(range(15))))
    batches, padded = epoch(remote, num_workers=1)
    seen = [i for batch in batches for i in batch["sample_ids"].tolist()]
    assert sorted(seen[:len(seen) - padded]) == list(range(15))
    for batch in batches:
        assert_batches_equal(dict(batch), here.__getitems__(batch["sample_ids"].tolist()))


def test_the_prefetcher_is_told_which_objects_a_batch_reads(s3_arrow, s3_zarr, tmp_path):
    rows = ArrowRows(s3_arrow[1], cache_dir=tmp_path / "cache")
    assert [e.key for e in rows.entries_for([59, 0, 1, 40])] == ["rows/data-00002-of-00003.arrow", "rows/data-00000-of-00003.arrow"]
    samples = ZarrSamples(s3_zarr[1], cache_dir=tmp_path / "cache", fields=["images"])
    keys = [e.key for e in samples.entries_for([6, 14, 7])]  # run1 item 1 (band 0), run2 item 6 (band 3), run1 item 2 (band 1)
    assert keys == ["z/run1.zarr/images/c/0/0/0", "z/run2.zarr/images/c/3/0/0", "z/run1.zarr/images/c/1/0/0"]
    assert all(samples.remote.cache.prefetch(entry, next_use=1) for entry in samples.entries_for([6, 14, 7]))
    assert samples.remote.cache.stats.misses == 3 and samples[14]["images"][0, 0] == 14  # read from the cache
    assert samples.remote.cache.stats.misses == 3 + 2  # + the metadata of run2.zarr and run2.zarr/images, cached too


def test_a_missing_object_is_one_line_naming_it_and_the_endpoint(s3_arrow, s3_zarr, tmp_path, s3_server):
    _, url = s3_arrow
    bucket = url[5:].split("/")[0]
    client = boto3.client("s3")
    client.delete_object(Bucket=bucket, Key="rows/data-00001-of-00003.arrow")
    with pytest.raises(FormatError, match=rf"^s3://{bucket}/rows/data-00001-of-00003.arrow: listed by the dataset but not "
                                          rf"in the store at {s3_server}; upload the whole save_to_disk folder again$"):
        ArrowRows(url, cache_dir=tmp_path / "cache")
    samples = ZarrSamples(s3_zarr[1], cache_dir=tmp_path / "cache")
    client.delete_object(Bucket=bucket, Key="z/run2.zarr/labels/c/1")  # gone after the dataset was opened
    assert samples[8]["labels"] == 8
    with pytest.raises(StorageError, match=rf"^s3://{bucket}/z/run2.zarr/labels/c/1: no such object at {s3_server}; "):
        samples[14]
    with pytest.raises(InputError, match=rf"^s3://{bucket}/nothing: no zarr arrays at {s3_server} "):
        ZarrSamples(f"s3://{bucket}/nothing", cache_dir=tmp_path / "cache")


def test_zarr_from_a_server_gone_down_is_one_clear_error_in_bounded_time(own_s3_server, s3_zarr, tmp_path):
    import time

    endpoint, stop = own_s3_server  # requested first: the zarr stores are uploaded to this server
    samples = ZarrSamples(s3_zarr[1], cache_dir=tmp_path / "cache", storage_timeout_s=1.0)
    stop()
    began = time.monotonic()
    with pytest.raises(StorageError, match=r"^s3://[\w-]+/z/run0.zarr/.*: no connection to the store at " + endpoint + " "):
        samples[0]
    assert time.monotonic() - began < 20
