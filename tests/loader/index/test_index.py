"""The global index: locate is a bijection, the cache is used only while valid, every change makes it stale."""

import json
import os
import pickle
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.errors import IndexStaleError, InputError
from sdl.loader.index import (
    GlobalIndex,
    SourceInfo,
    build_index,
    cache_path,
    group_by_source,
    open_index,
)


def make_index(lengths):
    sources = tuple(SourceInfo(path=f"s{i}", length=n, size=n, mtime_ns=0) for i, n in enumerate(lengths))
    return GlobalIndex(kind="tokens", root="/nowhere", sources=sources)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=40))
def test_locate_is_a_bijection(lengths):
    index = make_index(lengths)
    positions = np.arange(index.total)
    source_ids, offsets = index.locate(positions)
    expected = [(s, o) for s, n in enumerate(lengths) for o in range(n)]
    assert list(zip(source_ids.tolist(), offsets.tolist())) == expected
    assert np.array_equal(index.offsets[source_ids] + offsets, positions)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=300), st.integers(0, 2**32))
def test_locate_matches_binary_search_on_random_positions(lengths, seed):
    index = make_index(lengths)
    positions = np.random.default_rng(seed).integers(0, index.total, 2000)
    source_ids, offsets = index.locate(positions)
    assert np.array_equal(source_ids, np.searchsorted(index.offsets, positions, side="right") - 1)
    assert np.all((offsets >= 0) & (offsets < np.asarray(lengths)[source_ids]))


def test_locate_refuses_positions_outside():
    index = make_index([3, 4])
    with pytest.raises(IndexError, match="outside"):
        index.locate([7])
    with pytest.raises(IndexError):
        index.locate([-1])


def test_group_by_source_covers_each_position_once():
    source_ids = np.array([3, 1, 3, 0, 1, 3])
    groups = group_by_source(source_ids)
    assert [s for s, _ in groups] == [0, 1, 3]
    assert sorted(np.concatenate([p for _, p in groups]).tolist()) == list(range(6))
    assert all((source_ids[p] == s).all() for s, p in groups)


def test_open_uses_cache_and_survives_a_round_trip(token_dataset):
    path = token_dataset(num_tokens=5_000, tokens_per_shard=1_000)
    built = build_index(path)
    opened = open_index(path)
    assert opened.identity == built.identity and opened.fingerprint == built.fingerprint
    assert opened.sources == built.sources and opened.total == 5_000 and len(opened.sources) == 5
    assert opened.path_of(2).name == "shard-000002.npy" and opened.meta["dtype"] == "uint16"
    assert pickle.loads(pickle.dumps(opened)).identity == opened.identity


def test_identity_survives_a_copy_fingerprint_does_not(token_dataset, tmp_path):
    import shutil

    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    original = build_index(path)
    time.sleep(0.01)
    copy = shutil.copytree(path, tmp_path / "copy", ignore=shutil.ignore_patterns(".sdl"))
    os.utime(copy / "shard-000000.npy", ns=(1, 1))
    copied = build_index(copy)
    assert copied.identity == original.identity and copied.fingerprint != original.fingerprint


def _rewrite_same_size(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    time.sleep(0.01)
    path.write_bytes(bytes(data))


def _append_shard(path):
    import json

    from sdl.loader.format.tokens import npy_bytes

    (path / "shard-000003.npy").write_bytes(npy_bytes(np.zeros(10, dtype=np.uint16)))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shards"].append({"file": "shard-000003.npy", "num_tokens": 10, "num_docs": 0, "checksum": "", "docs_file": None})
    manifest["num_tokens"] += 10
    (path / "manifest.json").write_text(json.dumps(manifest))


CHANGES = {  # change -> what the error names
    "rewritten (same size)": (lambda p: _rewrite_same_size(p / "shard-000001.npy"), "shard-000001.npy was resized or rewritten"),
    "resized": (lambda p: (p / "shard-000001.npy").write_bytes((p / "shard-000001.npy").read_bytes() + b"\0\0"),
                "shard-000001.npy was resized or rewritten"),
    "removed": (lambda p: (p / "shard-000002.npy").unlink(), "shard-000002.npy: listed in the cached index but missing"),
    "added": (_append_shard, "manifest.json was rewritten"),
    "manifest edited": (lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text() + " "), "manifest.json was rewritten"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_makes_the_cache_stale_and_names_the_file(token_dataset, change):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    build_index(path)
    make_change, named = CHANGES[change]
    make_change(path)
    with pytest.raises(IndexStaleError, match="sdl index") as caught:
        open_index(path)
    assert named in str(caught.value)


def test_cache_names_are_importable_from_the_index_package():
    from sdl.loader import index
    from sdl.loader.index import cache

    for name in ("build_index", "open_index", "cache_path", "load_cached_index", "current_fingerprint"):
        assert getattr(index, name) is getattr(cache, name)


def test_a_corrupt_cache_is_stale_and_an_old_version_is_rebuilt(token_dataset):
    path = token_dataset(num_tokens=2_000, tokens_per_shard=1_000)
    build_index(path)
    cache_path(path).write_text("{not json")
    with pytest.raises(IndexStaleError, match="corrupt"):
        open_index(path)
    cache_path(path).write_text('{"format": "sdl-index", "version": 1}')
    assert open_index(path).total == 2_000


@pytest.mark.parametrize("field, value", [("meta", None), ("meta", []), ("sources", None)])
def test_a_cache_with_a_null_part_is_stale_and_sdl_index_rebuilds_it(token_dataset, field, value):
    path = token_dataset(num_tokens=2_000, tokens_per_shard=1_000)
    data = build_index(path).to_dict() | {field: value}
    cache_path(path).write_text(json.dumps(data))
    with pytest.raises(IndexStaleError, match=rf"malformed index cache .*; run `sdl index {path}` to rebuild it"):
        open_index(path)
    build_index(path)
    assert open_index(path).total == 2_000


DAMAGE = {  # what is done to a good cache -> what the error says
    "a length past int64": (lambda d: d["sources"].update(length=[2**70] * len(d["sources"]["length"])),
                            r"malformed index cache \(a number too large for int64"),
    "a kind sdl does not know": (lambda d: d.update(kind="bogus"), r"malformed index cache \(index kind 'bogus'"),
    "the dtype removed": (lambda d: d["meta"].pop("dtype"), r"no longer matches the files \(the cache file was edited\)"),
    "null_columns a number": (lambda d: d["meta"].update(null_columns=5), r"malformed index cache \(null_columns is 5, expected"),
    "absent_chunks a list": (lambda d: d["meta"].update(absent_chunks=["c/0"]), r"malformed index cache \(absent_chunks is"),
    "docs_files a number": (lambda d: d["meta"].update(docs_files=3), r"malformed index cache \(docs_files is 3, expected"),
    "docs_files of strings": (lambda d: d["meta"].update(docs_files={"size": ["1"], "mtime_ns": [1]}),
                              r"malformed index cache \(docs_files is .*, expected"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_stale_naming_it_and_sdl_index_rebuilds_it(token_dataset, damage):
    """Each was a traceback (OverflowError, KeyError 'dtype' in sdl inspect, a FormatError naming no file) or unchecked."""
    path = token_dataset(num_tokens=2_000, tokens_per_shard=1_000)
    data = build_index(path).to_dict()
    DAMAGE[damage][0](data)
    cache_path(path).write_text(json.dumps(data))
    with pytest.raises(IndexStaleError, match=DAMAGE[damage][1] + rf".*; run `sdl index {path}` to rebuild it"):
        open_index(path)
    build_index(path)
    assert open_index(path).meta["dtype"] == "uint16"


def test_a_cache_nested_deeper_than_the_stack_is_corrupt(token_dataset):
    path = token_dataset(num_tokens=2_000, tokens_per_shard=1_000)
    build_index(path)
    cache_path(path).write_text("[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError
    with pytest.raises(IndexStaleError, match="corrupt index cache"):
        open_index(path)


@pytest.mark.parametrize("meta", [5, True, 1.5, None])
def test_an_arrow_cache_whose_meta_is_not_an_object_is_malformed(tmp_path, meta):
    import pyarrow as pa

    tmp_path.joinpath("rows").mkdir()
    with pa.OSFile(str(tmp_path / "rows" / "data.arrow"), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("x", pa.int64())])) as writer:
        writer.write_table(pa.table({"x": np.arange(10)}))
    data = build_index(tmp_path / "rows").to_dict() | {"meta": meta}  # a TypeError in `in`; `null` was rebuilt silently
    cache_path(tmp_path / "rows").write_text(json.dumps(data))
    with pytest.raises(IndexStaleError, match=rf"malformed index cache \(meta is {type(meta).__name__}"):
        open_index(tmp_path / "rows")


def test_a_zarr_cache_of_an_earlier_sdl_with_a_dtype_numpy_cannot_parse_is_rebuilt(tmp_path):
    import zarr
    from sdl.loader.index import source_identity

    zarr.create_array(str(tmp_path / "s.zarr"), shape=(4,), chunks=(2,), dtype="<U4", zarr_format=2)[:] = ["a", "b", "c", "d"]
    index = build_index(tmp_path)
    old = index.to_dict()
    old["meta"]["fields"]["data"]["dtype"] = "str128"  # as sdl recorded it before: every read died with a TypeError
    old["identity"] = source_identity("zarr", index.sources, old["meta"])
    cache_path(tmp_path).write_text(json.dumps(old))
    assert open_index(tmp_path).meta["fields"]["data"]["dtype"] == "<U4"


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_index(tmp_path / "absent")


def test_a_rebuild_removes_what_a_killed_build_left_and_nothing_else(token_dataset):
    """A build killed while writing the cache leaves `.index.json.tmp-<pid>@<host>-*`: the next build deletes those of
    dead writers only (a live writer's, or another host's, may still be written)."""
    import socket
    import subprocess
    import sys

    from sdl.loader.index import build_index, cache_path

    path = token_dataset(num_tokens=2_000)
    target = cache_path(path)
    build_index(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    leftover = target.parent / f".{target.name}.tmp-{dead}@{socket.gethostname()}-abc"
    elsewhere = target.parent / f".{target.name}.tmp-{dead}@another-host-abc"
    leftover.write_text("half an index")
    elsewhere.write_text("someone else's")
    build_index(path)
    assert not leftover.exists() and elsewhere.exists() and target.is_file()
