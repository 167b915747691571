"""ZarrSamples: a batch equals the per-item reads, pickles into workers, applies its transform."""

import pickle
import re

import numpy as np
import pytest
import torch
from sdl.loader.data.zarr_samples import ZarrSamples


def write_stores(root, lengths=(5, 3, 7)):
    import zarr

    start = 0
    for i, n in enumerate(lengths):
        group = zarr.open_group(str(root / f"run{i}.zarr"), mode="w")
        images = group.create_array("images", shape=(n, 2, 3), chunks=(2, 2, 3), dtype="float32")
        images[:] = np.arange(start, start + n, dtype="float32")[:, None, None] + np.zeros((2, 3), "float32")
        labels = group.create_array("labels", shape=(n,), chunks=(4,), dtype="int64")
        labels[:] = np.arange(start, start + n)
        start += n
    return root


def add_one(batch):
    return batch | {"labels": batch["labels"] + 1}


def test_batch_equals_items(tmp_path):
    dataset = ZarrSamples(write_stores(tmp_path / "z"), max_open=2)
    assert len(dataset) == 15 and dataset.tokens_per_sample is None
    ids = [14, 0, 7, 7, 3, 9, 5]
    batch = dataset.__getitems__(ids)
    assert batch["sample_ids"].tolist() == ids and batch["images"].shape == (7, 2, 3)
    assert batch["labels"].tolist() == ids and torch.equal(batch["images"][:, 1, 2], torch.tensor(ids, dtype=torch.float32))
    for row, i in enumerate(ids):
        item = dataset[i]
        assert torch.equal(item["images"], batch["images"][row]) and int(item["labels"]) == i


def test_pickles_without_open_stores_and_transform_applies(tmp_path):
    dataset = ZarrSamples(write_stores(tmp_path / "z"), transform=add_one)
    dataset.__getitems__([1, 2])
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._open is None and clone.identity == dataset.identity
    assert clone.__getitems__([4, 12])["labels"].tolist() == [5, 13]
    assert ZarrSamples(tmp_path / "z", fields=["labels"]).identity != dataset.identity
    assert dataset.describe()["num_samples"] == 15


def test_plain_arrays_have_a_data_field(tmp_path):
    import zarr

    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(100, 4), chunks=(10, 4), dtype="uint16")
    array[:] = np.arange(400).reshape(100, 4)
    batch = ZarrSamples(tmp_path / "a.zarr").__getitems__([99, 0, 50])  # sparse rows: orthogonal selection
    assert batch["data"][:, 0].tolist() == [396, 0, 200]


def test_a_corrupt_chunk_names_the_store_and_items(tmp_path):
    import pytest
    from sdl.loader.errors import FormatError

    dataset = ZarrSamples(write_stores(tmp_path / "z"))
    (tmp_path / "z" / "run1.zarr" / "images" / "c" / "0" / "0" / "0").write_bytes(b"not a zstd frame")
    assert dataset.__getitems__([4, 7])["labels"].tolist() == [4, 7]  # other chunks still read
    with pytest.raises(FormatError, match=r"run1\.zarr: field 'images', items 0…1: a chunk does not decode .*sdl index .* --validate"):
        dataset.__getitems__([5, 6, 2])


@pytest.mark.parametrize("zarr_format, separator, key", [
    (3, None, "c/1/0"), (3, ".", "c.1.0"), (2, None, "1.0"), (2, "/", "1/0")])
@pytest.mark.parametrize("grouped", [False, True])
def test_a_chunk_gone_since_indexing_is_an_error_naming_it_not_fill_values(tmp_path, zarr_format, separator, key, grouped):
    # zarr reads a chunk with no file as fill values; the index knows which chunks were absent when it was built
    import zarr
    from sdl.loader.errors import FormatError

    options = {"chunk_key_encoding": {"name": "default" if zarr_format == 3 else "v2", **({"separator": separator} if separator else {})}}
    store = tmp_path / "z" / "run.zarr"
    array = zarr.create_array(str(store / "images" if grouped else store), shape=(8, 2), chunks=(2, 2), dtype="int16",
                              zarr_format=zarr_format, **options)
    if grouped:
        zarr.open_group(str(store), mode="a", zarr_format=zarr_format)
    array[:6] = 1  # rows 6:8 stay fill value: zarr writes no chunk for them, and the index records it absent
    dataset = ZarrSamples(tmp_path / "z")
    field = "images" if grouped else "data"
    assert dataset.__getitems__(list(range(8)))[field].sum().item() == 12  # the recorded-absent chunk: fill values
    (store / ("images" if grouped else "") / key).unlink()  # rows 2:4
    fresh = pickle.loads(pickle.dumps(dataset))  # a worker's copy: opens the store anew
    assert fresh.__getitems__([0, 1])[field].sum().item() == 4 and fresh.__getitems__([6, 7])[field].sum().item() == 0
    where = "run.zarr/images" if grouped else "run.zarr"
    with pytest.raises(FormatError, match=rf"z/{where}: chunk '{re.escape(key)}' was there when the index was built and is gone"):
        fresh.__getitems__([3])


def test_a_chunk_gone_since_indexing_is_named_through_workers(tmp_path):
    import zarr
    from sdl.loader import make_loader
    from sdl.loader.errors import FormatError

    array = zarr.create_array(str(tmp_path / "z" / "a.zarr"), shape=(40, 3), chunks=(5, 3), dtype="float32")
    array[:] = np.ones((40, 3), "float32")
    loader = make_loader(ZarrSamples(tmp_path / "z"), 4, num_workers=2, device="cpu", shuffle=False)
    (tmp_path / "z" / "a.zarr" / "c" / "5" / "0").unlink()  # items 25:30
    with pytest.raises(FormatError, match=r"a\.zarr: chunk 'c/5/0' was there when the index was built") as raised:
        for _ in loader:
            pass
    assert "\n" not in str(raised.value)


def test_string_and_datetime_fields_reach_the_training_loop_as_arrays_through_workers(tmp_path):
    """Fields torch has no tensor for come as numpy arrays (with or without workers; the worker transport once made
    every array a tensor, a TypeError for these)."""
    import zarr
    from sdl.loader import make_loader

    group = zarr.open_group(str(tmp_path / "z" / "run.zarr"), mode="w")
    group.create_array("labels", shape=(12,), chunks=(4,), dtype="int64")[:] = np.arange(12)
    group.create_array("names", shape=(12,), chunks=(4,), dtype=str)[:] = np.array(["n" * i for i in range(12)], dtype=object)
    group.create_array("codes", shape=(12,), chunks=(4,), dtype="<U3")[:] = np.array([f"c{i}" for i in range(12)])
    group.create_array("times", shape=(12,), chunks=(4,), dtype="<M8[s]")[:] = np.arange(12).astype("<M8[s]")
    for workers in (0, 2):
        batches = list(make_loader(ZarrSamples(tmp_path / "z"), 4, num_workers=workers, device="cpu", shuffle=False))
        assert [b["labels"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        for batch in batches:
            ids = batch["labels"].tolist()
            assert batch["names"].tolist() == ["n" * i for i in ids] and batch["codes"].tolist() == [f"c{i}" for i in ids]
            assert batch["times"].astype("int64").tolist() == ids and batch["times"].dtype == np.dtype("<M8[s]")


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("new_length", [4, 12])
def test_an_array_resized_since_indexing_is_named_on_open_with_both_shapes(tmp_path, zarr_format, new_length):
    """Shrunk, it read as "a chunk does not decode (IndexError …)" with --validate as the advice; grown, silently."""
    import zarr
    from sdl.loader.errors import FormatError

    array = zarr.create_array(str(tmp_path / "z" / "a.zarr"), shape=(8, 3), chunks=(2, 3), dtype="int32", zarr_format=zarr_format)
    array[:] = np.arange(24).reshape(8, 3)
    dataset = ZarrSamples(tmp_path / "z")
    array.resize((new_length, 3))
    with pytest.raises(FormatError, match=re.escape(
            f"a.zarr: field 'data': expected shape (8, 3) (the index), found ({new_length}, 3): the array was resized since "
            f"the index was built; run `sdl index {tmp_path / 'z'}` to rebuild it")):
        dataset.__getitems__([0, 1])
