"""`--validate` catches each corruption, naming the file, what was expected and found, and the fix."""

import json
import os
import re

import numpy as np
import pytest
from sdl.loader.format.tokens import npy_bytes
from sdl.loader.index import build_index
from sdl.loader.index.validation import validate_dataset


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def big_token(path):
    array = np.load(path)
    array[3] = 60_000
    path.write_bytes(npy_bytes(array))


def set_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shards"][1].update(changes)
    manifest["num_tokens"] = sum(shard["num_tokens"] for shard in manifest["shards"])  # a manifest at one with itself
    (path / "manifest.json").write_text(json.dumps(manifest))


CORRUPTIONS = {
    "missing": (lambda p: (p / "shard-000001.npy").unlink(), "no such file"),
    "truncated": (lambda p: (p / "shard-000001.npy").write_bytes((p / "shard-000001.npy").read_bytes()[:-100]), "truncated"),
    "bad header": (lambda p: (p / "shard-000001.npy").write_bytes(b"\x93NUMPY garbage" + b"\0" * 200), "readable .npy header"),
    "checksum": (lambda p: flip_last_byte(p / "shard-000001.npy"), "checksum"),
    "token id": (lambda p: big_token(p / "shard-000001.npy"), "vocab size"),
    "length": (lambda p: set_manifest(p, num_tokens=999), "999 tokens"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_validation_catches(token_dataset, name):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=50_000)
    assert validate_dataset(path).ok
    corrupt, expected_text = CORRUPTIONS[name]
    corrupt(path)
    report = validate_dataset(path)
    assert not report.ok
    assert all(f.file == "shard-000001.npy" and "sdl prepare" in f.fix for f in report.failures)
    assert expected_text in " ".join(f"{f.expected} {f.found}" for f in report.failures)


def test_validation_decodes_every_zarr_chunk(tmp_path):
    import zarr

    array = zarr.create_array(str(tmp_path / "z" / "a.zarr"), shape=(8, 4), chunks=(2, 4), dtype="float64")
    array[:] = np.arange(32).reshape(8, 4)
    assert validate_dataset(tmp_path / "z").ok
    chunk = next(p for p in (tmp_path / "z" / "a.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"not a zstd frame at all")
    report = validate_dataset(tmp_path / "z")
    key = chunk.relative_to(tmp_path / "z" / "a.zarr").as_posix()
    assert not report.ok and [f.file for f in report.failures] == [f"a.zarr/{key}"] and "decode" in report.failures[0].expected


@pytest.mark.parametrize("zarr_format, separator, keys", [
    (3, None, ["c/1/0", "c/3/1"]), (3, ".", ["c.1.0", "c.3.1"]), (2, None, ["1.0", "3.1"]), (2, "/", ["1/0", "3/1"])])
def test_validation_finds_deleted_zarr_chunks(tmp_path, zarr_format, separator, keys):
    import zarr

    options = {"chunk_key_encoding": {"name": "default" if zarr_format == 3 else "v2", **({"separator": separator} if separator else {})}}
    array = zarr.create_array(str(tmp_path / "z" / "run.zarr" / "images"), shape=(7, 5), chunks=(2, 3), dtype="int16",
                              zarr_format=zarr_format, **options)
    zarr.open_group(str(tmp_path / "z" / "run.zarr"), mode="a", zarr_format=zarr_format)
    array[:] = np.arange(35).reshape(7, 5) + 1  # no chunk is all fill value: zarr writes every one
    assert validate_dataset(tmp_path / "z").ok
    for key in keys:
        (tmp_path / "z" / "run.zarr" / "images" / key).unlink()
    report = validate_dataset(tmp_path / "z")
    assert [f.file for f in report.failures] == [f"run.zarr/images/{key}" for key in keys]
    assert all("no such file" in f.found for f in report.failures)


def test_zarr_chunks_absent_when_indexed_are_not_failures(tmp_path):
    import zarr

    array = zarr.create_array(str(tmp_path / "z" / "a.zarr"), shape=(6, 2), chunks=(2, 2), dtype="int8")
    array[:2] = 1  # rows 2:6 stay fill value: zarr writes no chunk for them
    assert [f.file for f in validate_dataset(tmp_path / "z").failures] == ["a.zarr/c/1/0", "a.zarr/c/2/0"]
    build_index(tmp_path / "z")  # records them as absent
    assert validate_dataset(tmp_path / "z").ok
    (tmp_path / "z" / "a.zarr" / "c" / "0" / "0").unlink()
    assert [f.file for f in validate_dataset(tmp_path / "z").failures] == ["a.zarr/c/0/0"]


def test_validation_reads_every_arrow_batch(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"n": list(range(100))}).save_to_disk(str(tmp_path / "s"), num_shards=2)
    assert validate_dataset(tmp_path / "s").ok
    target = tmp_path / "s" / "data-00001-of-00002.arrow"
    target.write_bytes(target.read_bytes()[:200])
    report = validate_dataset(tmp_path / "s")
    assert not report.ok and report.failures[0].file == "data-00001-of-00002.arrow"
    assert report.to_dict()["failures"][0]["fix"].startswith("re-save")


def test_damaged_zarr_metadata_is_one_failure_naming_the_store(tmp_path):
    # it was two: the listing's ("the same fields … in every store") and the store's, with both fixes run together
    import zarr

    for run in ("run1", "run2"):
        zarr.create_array(str(tmp_path / "z" / f"{run}.zarr" / "x"), shape=(8, 2), chunks=(4, 2), dtype="int8")[:] = 1
        zarr.open_group(str(tmp_path / "z" / f"{run}.zarr"), mode="a")
    (tmp_path / "z" / "run1.zarr" / "x" / "zarr.json").write_text("{ broken")
    report = validate_dataset(tmp_path / "z")
    assert [(f.file, f.expected) for f in report.failures] == [("run1.zarr", "a zarr store that opens")]
    assert report.failures[0].fix == "rewrite the array with zarr" and "unreadable zarr metadata" in report.failures[0].found


def _replace_by(path, what):
    path.unlink()
    {"a folder": path.mkdir, "a link loop": lambda: os.symlink(path.name, path),
     "a dangling link": lambda: os.symlink("nowhere.npy", path)}[what]()


SHARD_ENTRIES = {  # what stands where a shard should be -> what --validate found, what reading it says
    "a folder": ("a folder", "shard-000001.npy: a folder, expected a .npy shard file"),
    "a link loop": ("a symbolic link loop (-> shard-000001.npy)",
                    "shard-000001.npy: a symbolic link loop (-> shard-000001.npy), expected a .npy shard file"),
    "a dangling link": ("a dangling symbolic link (-> nowhere.npy)",
                        "shard-000001.npy: listed in the manifest but a dangling symbolic link (-> nowhere.npy)"),
}


@pytest.mark.parametrize("what", sorted(SHARD_ENTRIES))
def test_a_shard_that_is_no_file_is_named_for_what_it_is(token_dataset, what):
    """--validate said "found no such file" for each; reading it, "corrupt .npy header ([Errno 21] …)" for a folder."""
    from sdl.loader.errors import FormatError

    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    _replace_by(path / "shard-000001.npy", what)
    (failure,) = validate_dataset(path).failures
    assert (failure.file, failure.found) == ("shard-000001.npy", SHARD_ENTRIES[what][0]) and "sdl prepare --repair" in failure.fix
    with pytest.raises(FormatError, match=re.escape(f"{path}/{SHARD_ENTRIES[what][1]}; run `sdl prepare --repair {path}`")):
        build_index(path)


@pytest.mark.parametrize("what", ["a folder", "a dangling link"])
def test_a_manifest_that_is_no_file_is_named_for_what_it_is(token_dataset, what):
    """It read as a folder without a manifest: ".npy files but no manifest.json"."""
    from sdl.loader.errors import FormatError

    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    _replace_by(path / "manifest.json", what)
    found = "a folder" if what == "a folder" else "a dangling symbolic link (-> nowhere.npy)"
    expected = f"{path / 'manifest.json'}: {found}, expected the dataset's manifest file; remove it, then re-run the sdl prepare"
    for read in (build_index, validate_dataset):
        with pytest.raises(FormatError, match=re.escape(expected)):
            read(path)
