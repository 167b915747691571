"""Zarr metadata files that are valid JSON but not zarr metadata (`null`, a list, a damaged shape) are refused in one
line naming the file, never with a traceback; data types are recorded so that they read back, or refused likewise."""

import json
import re

import numpy as np
import pytest
from sdl.loader.errors import FormatError
from sdl.loader.index import build_index


def write_store(root, zarr_format):
    import zarr

    array = zarr.create_array(str(root / "run0.zarr"), shape=(4, 2), chunks=(2, 2), dtype="int64", zarr_format=zarr_format)
    array[:] = np.arange(8).reshape(4, 2)
    return root / "run0.zarr" / ("zarr.json" if zarr_format == 3 else ".zarray")


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("content", ["null", "[1, 2]", '"array"'])
def test_metadata_that_is_not_an_object_is_refused(tmp_path, zarr_format, content):
    meta_file = write_store(tmp_path, zarr_format)
    assert build_index(tmp_path, write_cache=False).total == 4
    meta_file.write_text(content)
    with pytest.raises(FormatError, match=rf"{re.escape(meta_file.name)}: holds {re.escape(content)}, expected a JSON object of zarr metadata"):
        build_index(tmp_path, write_cache=False)


def test_group_member_metadata_that_is_not_an_object_is_refused(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("images", shape=(4, 2), chunks=(2, 2), dtype="uint8")
    (tmp_path / "g.zarr" / "images" / "zarr.json").write_text("null")
    with pytest.raises(FormatError, match=r"g\.zarr/images/zarr\.json: holds null"):
        build_index(tmp_path / "g.zarr", write_cache=False)


@pytest.mark.parametrize("shape", [None, ["ten", 2], [4.5, 2], [-1, 2]])
def test_damaged_shape_is_refused(tmp_path, shape):
    meta_file = write_store(tmp_path, 3)
    meta = json.loads(meta_file.read_text())
    meta["shape"] = shape
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=r"run0\.zarr: zarr shape .*expected a list of non-negative integers"):
        build_index(tmp_path, write_cache=False)


N = 6
TYPES = [  # (zarr format, the type as zarr is given it, the values, the dtype the index records)
    (2, "<U4", np.array([f"w{i}" for i in range(N)]), "<U4"),
    (3, "<U4", np.array([f"w{i}" for i in range(N)]), "<U4"),  # v3: {"name": "fixed_length_utf32", ...}
    (2, "|S3", np.array([b"b%d" % i for i in range(N)]), "|S3"),
    (3, "|S3", np.array([b"b%d" % i for i in range(N)]), "|S3"),  # v3: null_terminated_bytes
    (2, str, np.array(["x" * i for i in range(N)], dtype=object), "object"),  # v2 "|O" with a vlen-utf8 codec
    (3, str, np.array(["x" * i for i in range(N)], dtype=object), "object"),  # v3 "string"
    (3, "<M8[ns]", np.arange(N).astype("<M8[ns]"), "datetime64[ns]"),  # v3: numpy.datetime64 with its unit
    (3, "<m8[10s]", np.arange(N).astype("<m8[10s]"), "timedelta64[10s]"),
    (2, ">i4", np.arange(N, dtype=">i4"), "int32"),  # numbers keep the name indexes have always recorded
    (3, "bool", np.arange(N) % 2 == 1, "bool"),
]


@pytest.mark.parametrize("zarr_format, given, values, recorded", TYPES)
def test_strings_bytes_and_datetimes_are_recorded_as_numpy_reads_them_and_read_back(tmp_path, zarr_format, given, values, recorded):
    """`sdl index` once recorded numpy's names (`str128`, `bytes24`, `string`), which numpy does not parse: every read
    died with a TypeError; a v3 type with parameters (a JSON object) was a traceback at index time."""
    import zarr
    from sdl.loader import ZarrSamples

    zarr.create_array(str(tmp_path / "s.zarr"), shape=(N,), chunks=(2,), dtype=given, zarr_format=zarr_format)[:] = values
    assert build_index(tmp_path).meta["fields"] == {"data": {"shape": [], "dtype": recorded}}
    got = ZarrSamples(tmp_path).__getitems__([5, 0, 3])["data"]
    assert np.asarray(got).tolist() == values[[5, 0, 3]].tolist()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_structured_type_is_refused_in_one_line_naming_the_array(tmp_path, capsys, zarr_format):
    import zarr
    from sdl.cli.main import main

    pair = np.dtype([("a", "<i4"), ("b", "<f4")])
    zarr.create_array(str(tmp_path / "s.zarr"), shape=(N,), chunks=(2,), dtype=pair, zarr_format=zarr_format)
    expected = f"{tmp_path / 's.zarr'}: zarr data type " + (r'\[\["a", "<i4"\]' if zarr_format == 2 else r'\{"name": "structured"')
    with pytest.raises(FormatError, match=expected):
        build_index(tmp_path, write_cache=False)
    assert main(["index", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert re.match(f"error: {expected}.*, which sdl does not read; expected numbers", err) and err.count("\n") == 1
