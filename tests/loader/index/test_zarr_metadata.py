"""Zarr metadata files that are valid JSON but not zarr metadata (`null`, a list, a damaged shape) are refused in one
line naming the file, never with a traceback."""

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
