"""An Arrow column that the file's `datasets` features declare an ArrayXD of fixed shape holds that shape in every row,
or reading the row is a FormatError naming it (never nested lists of another shape) and `--validate` lists it."""

import datasets
import numpy as np
import pyarrow as pa
import pytest
from sdl.cli.main import main
from sdl.loader.data.arrow_rows import ArrowRows
from sdl.loader.errors import FormatError


def saved(tmp_path, shape, rows, *, extension):
    """A `save_to_disk` dataset whose column x is Array2D/3D `shape`, its rows then replaced by `rows` (lists, None)."""
    kind = {2: datasets.Array2D, 3: datasets.Array3D}[len(shape)]
    features = datasets.Features({"x": kind(shape=shape, dtype="float32"), "y": datasets.Value("int64")})
    first = np.zeros([2 if size is None else size for size in shape], "float32")
    datasets.Dataset.from_dict({"x": [first] * len(rows), "y": list(range(len(rows)))}, features=features).save_to_disk(tmp_path / "ds")
    (path,) = (tmp_path / "ds").glob("*.arrow")
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    kind = table.schema.field("x").type
    storage = kind.storage_type if isinstance(kind, pa.BaseExtensionType) else kind
    x = pa.array(rows, type=storage)
    if extension and isinstance(kind, pa.BaseExtensionType):
        x = pa.ExtensionArray.from_storage(kind, x)
    schema = table.schema if extension else table.schema.set(0, pa.field("x", storage))
    fixed = pa.Table.from_arrays([x, table.column("y")], schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, fixed.schema) as writer:
        writer.write_table(fixed, max_chunksize=4)  # record batches of 4 rows: the row is named in the file
    return tmp_path / "ds"


def grid(value, shape):
    return np.full(shape, value, "float32").tolist()


@pytest.mark.parametrize("extension", [True, False], ids=["extension-type", "storage-type"])
@pytest.mark.parametrize("bad, axis", [(grid(6, (3, 3)), 0), (grid(6, (2, 2)), 1), ([[6.0] * 3, [6.0] * 2], 1)])
def test_a_row_of_another_shape_is_named_when_read_and_by_validate(tmp_path, capsys, extension, bad, axis):
    rows = [grid(i, (2, 3)) for i in range(10)]
    rows[6] = bad
    folder = saved(tmp_path, (2, 3), rows, extension=extension)
    capsys.readouterr()  # the progress of save_to_disk
    dataset = ArrowRows(folder)
    assert np.array(dataset.__getitems__([0, 1, 2, 3, 9])["x"]).shape == (5, 2, 3)  # other record batches read
    with pytest.raises(FormatError, match=rf"column 'x', row 6 of the file: expected the declared shape \(2, 3\), found \d items "
                                          rf"on axis {axis}; the file does not match its features") as raised:
        dataset.__getitems__([5, 6])
    assert "\n" not in str(raised.value)
    assert main(["index", str(folder), "--validate"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"expected column 'x' of the declared shape (2, 3) in every row, found" in err
    assert f"on axis {axis} in row 6 of the file; re-save the dataset" in err


def test_rows_of_the_declared_shape_a_dynamic_first_axis_and_null_rows_read(tmp_path, capsys):
    rows = [grid(i, (1 + i % 3, 2, 2)) for i in range(9)] + [None]
    folder = saved(tmp_path, (None, 2, 2), rows, extension=True)
    batch = ArrowRows(folder).__getitems__(list(range(10)))
    assert [np.array(row).shape for row in batch["x"][:9]] == [(1 + i % 3, 2, 2) for i in range(9)]  # a null row passes too
    assert main(["index", str(folder), "--validate"]) == 0
    rows[4] = grid(4, (2, 2, 3))
    folder = saved(tmp_path / "bad", (None, 2, 2), rows, extension=True)
    with pytest.raises(FormatError, match=r"row 4 of the file: expected the declared shape \(None, 2, 2\), found 3 items on axis 2"):
        ArrowRows(folder).__getitems__([4])
