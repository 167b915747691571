"""Zarr and Arrow folders whose entries are links (a store kept elsewhere): a link that leads nowhere, a link to a
folder that is not a store, or an entry named like a source that is none is refused in one line naming it, never
skipped (the dataset would lose its rows without a word, `--validate` included); links that lead to sources are read."""

import os
import re

import numpy as np
import pyarrow as pa
import pytest
from sdl.cli.main import main
from sdl.loader.errors import InputError
from sdl.loader.index import build_index


def arrow_folder(root, files=3, rows=10):
    root.mkdir()
    for f in range(files):
        table = pa.table({"x": np.arange(rows, dtype=np.int64) + 1000 * f})
        with pa.OSFile(str(root / f"data-{f:05d}.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return root


def zarr_folder(root, stores=2, items=4):
    import zarr

    for s in range(stores):
        array = zarr.create_array(str(root / f"s{s}.zarr"), shape=(items, 2), chunks=(2, 2), dtype="int32")
        array[:] = np.arange(items * 2).reshape(items, 2) + 100 * s
    return root


def linked(store, dataset, pattern):
    """`dataset`: a folder of links to the entries of `store` that match `pattern`."""
    dataset.mkdir()
    for entry in sorted(store.glob(pattern)):
        os.symlink(entry, dataset / entry.name)
    return dataset


def test_links_that_lead_to_sources_are_read(tmp_path):
    arrows = linked(arrow_folder(tmp_path / "a-store"), tmp_path / "a", "*.arrow")
    stores = linked(zarr_folder(tmp_path / "z-store"), tmp_path / "z", "*.zarr")
    assert build_index(arrows, write_cache=False).total == 30
    assert build_index(stores, write_cache=False).total == 8


@pytest.mark.parametrize("kind", ["arrow", "zarr"])
@pytest.mark.parametrize("how", ["dangling", "loop"])
def test_a_link_that_leads_nowhere_is_refused_naming_it(tmp_path, capsys, kind, how):
    if kind == "arrow":
        root, name = linked(arrow_folder(tmp_path / "store"), tmp_path / "ds", "*.arrow"), "data-00001.arrow"
    else:
        root, name = linked(zarr_folder(tmp_path / "store"), tmp_path / "ds", "*.zarr"), "s1.zarr"
    (root / name).unlink()
    target = tmp_path / "store" / "gone" if how == "dangling" else root / name
    os.symlink(target, root / name)
    found = f"{'a dangling symbolic link' if how == 'dangling' else 'a symbolic link loop'} (-> {target})"
    expected = f"{root / name}: {found} in the dataset folder {root}; expected it to lead to a file or store of the dataset"
    with pytest.raises(InputError, match=re.escape(expected)):
        build_index(root, write_cache=False)
    for args in (["index", root], ["index", root, "--validate"]):
        assert main(list(map(str, args))) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expected}") and err.rstrip().endswith("fix or remove the link") and err.count("\n") == 1


def test_a_folder_named_like_an_arrow_file_is_refused(tmp_path):
    root = arrow_folder(tmp_path / "ds")
    (root / "data-00003.arrow").mkdir()
    with pytest.raises(InputError, match=re.escape(f"{root / 'data-00003.arrow'}: a folder, expected an Arrow file")):
        build_index(root, write_cache=False)


def test_a_link_to_a_folder_of_stores_is_refused_not_skipped(tmp_path):
    zarr_folder(tmp_path / "more")
    root = zarr_folder(tmp_path / "ds")
    os.symlink(tmp_path / "more", root / "more")
    with pytest.raises(InputError, match=re.escape(f"{root / 'more'}: a symbolic link to a folder (-> {tmp_path / 'more'}), "
                                                   "not a zarr store, in the zarr dataset")):
        build_index(root, write_cache=False)


def test_a_store_folder_without_its_metadata_is_refused(tmp_path):
    root = zarr_folder(tmp_path / "ds")
    (root / "s1.zarr" / "zarr.json").unlink()  # a copy that lost it: its chunks alone are no store
    with pytest.raises(InputError, match=re.escape(f"{root / 's1.zarr'}: a folder named like a zarr store without zarr metadata")):
        build_index(root, write_cache=False)
    (root / "s1.zarr" / "inner.zarr").mkdir()
    zarr_folder(root / "s1.zarr" / "inner.zarr", stores=1)  # a plain folder of stores, named so, is read as before
    assert build_index(root, write_cache=False).total == 8
