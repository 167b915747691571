"""Zarr and Arrow discovery on files the real libraries wrote; the local HF cache lookup; bad folders."""

import json
import time

import numpy as np
import pytest
from sdl.loader.errors import FormatError, IndexStaleError, InputError
from sdl.loader.index import build_index, detect_kind, open_index
from sdl.loader.index.hf_cache import find_hf_dataset


def write_zarr_folder(root, lengths=(5, 3, 7), item_shape=(2, 3), dtype="float32", zarr_format=3):
    import zarr

    start = 0
    for i, n in enumerate(lengths):
        array = zarr.create_array(str(root / f"run{i}.zarr"), shape=(n, *item_shape), chunks=(2, *item_shape),
                                  dtype=dtype, zarr_format=zarr_format)
        array[:] = (np.arange(start, start + n)[:, None, None] + np.zeros(item_shape)).astype(dtype)
        start += n
    return root


def write_jsonl(path, num_rows):
    with open(path, "w") as handle:
        for i in range(num_rows):
            handle.write(json.dumps({"text": f"row {i}", "n": i, "score": i / 2}) + "\n")
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_folder_index(tmp_path, zarr_format):
    root = write_zarr_folder(tmp_path / "z", zarr_format=zarr_format)
    assert detect_kind(root) == "zarr"
    index = build_index(root)
    assert index.sources.paths == ("run0.zarr", "run1.zarr", "run2.zarr") and index.total == 15
    assert index.meta["fields"] == {"data": {"shape": [2, 3], "dtype": "float32"}}
    assert open_index(root).identity == index.identity


def test_zarr_group_store_has_named_fields(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("images", shape=(4, 2, 2), chunks=(2, 2, 2), dtype="uint8")
    group.create_array("labels", shape=(4,), chunks=(2,), dtype="int64")
    index = build_index(tmp_path / "g.zarr")
    assert index.total == 4 and set(index.meta["fields"]) == {"images", "labels"}


def test_zarr_stores_must_agree(tmp_path):
    root = write_zarr_folder(tmp_path / "z", lengths=(2,), item_shape=(2, 3))
    import zarr

    zarr.create_array(str(root / "run9.zarr"), shape=(3, 4, 3), chunks=(1, 4, 3), dtype="float32")
    with pytest.raises(FormatError, match="disagree.*run0.zarr.*run9.zarr"):
        build_index(root)
    zarr.create_array(str(root / "run9.zarr"), shape=(3, 2, 3), chunks=(1, 2, 3), dtype="int16", overwrite=True)
    with pytest.raises(FormatError, match="int16"):
        build_index(root)


def test_zarr_resized_or_added_store_is_stale(tmp_path):
    import zarr

    root = write_zarr_folder(tmp_path / "z")
    build_index(root)
    time.sleep(0.01)
    zarr.open_array(str(root / "run1.zarr"), mode="a").resize((9, 2, 3))
    with pytest.raises(IndexStaleError):
        open_index(root)
    build_index(root)
    write_zarr_folder(tmp_path / "other", lengths=(1,))
    (tmp_path / "other" / "run0.zarr").rename(root / "run5.zarr")
    with pytest.raises(IndexStaleError):
        open_index(root)


def test_save_to_disk_folder_and_dataset_dict(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(30)], "n": list(range(30))})
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=3)
    index = build_index(tmp_path / "saved")
    assert index.kind == "arrow" and index.total == 30 and len(index.sources) == 3
    assert index.meta["schema"] == {"text": "string", "n": "int64"}
    datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(InputError, match="splits.*--split"):
        build_index(tmp_path / "dict")
    assert build_index(tmp_path / "dict", split="test").total == 5


def test_hf_cache_lookup_finds_load_dataset_files_without_loading(tmp_path, monkeypatch):
    import datasets

    data = write_jsonl(tmp_path / "a.jsonl", 40)
    cache = tmp_path / "hf"
    datasets.load_dataset("json", data_files={"train": str(data), "test": str(data)}, cache_dir=str(cache))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not be called"))
    folder = find_hf_dataset("json", cache_dir=cache)
    assert build_index(folder, split="train").total == 40 and build_index(folder, split="test").meta["split"] == "test"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    assert find_hf_dataset("json") == folder
    with pytest.raises(InputError, match=r"not in the local HF datasets cache \(looked in .*nobody___nothing"):
        find_hf_dataset("nobody/nothing", cache_dir=cache)


def test_folder_of_arrow_files(tmp_path):
    import pyarrow as pa

    root = tmp_path / "a"
    root.mkdir()
    for i in range(2):
        table = pa.table({"x": np.arange(i * 10, i * 10 + 10)})
        with pa.ipc.new_file(str(root / f"part-{i}.arrow"), table.schema) as writer:
            writer.write_table(table)
    assert build_index(root).total == 20
    (root / "part-1.arrow").write_bytes(b"garbage, not arrow")
    with pytest.raises(FormatError, match="part-1.arrow: not a readable Arrow file"):
        build_index(root)


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        detect_kind(tmp_path / "empty")
    mixed = write_zarr_folder(tmp_path / "mixed", lengths=(1,))
    (mixed / "x.arrow").write_bytes(b"")
    with pytest.raises(InputError, match="mixing kinds"):
        detect_kind(mixed)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "shard-000000.npy", np.zeros(3, np.uint16))
    with pytest.raises(InputError, match="no manifest.json"):
        detect_kind(tmp_path / "npy")


@pytest.mark.parametrize("name", ["", ".", "..", "org/", "/abs", "a/b/c", "org/.."])
def test_a_name_that_is_no_dataset_name_is_refused_not_resolved_to_some_cached_dataset(tmp_path, name):
    # "" and "." used to glob the cache root itself and index whichever dataset came first
    from sdl.loader.errors import InputError
    from sdl.loader.index.hf_cache import find_hf_dataset

    (tmp_path / "generator" / "default-1" / "0.0.0" / "abc").mkdir(parents=True)
    with pytest.raises(InputError, match=r"expected a HuggingFace name \(name or organisation/name\)"):
        find_hf_dataset(name, cache_dir=tmp_path)
