"""ArrowRows: a batch equals the per-item reads, columns selected, picklable, transform lazy; HF cache by name."""

import json
import pickle

import datasets
import pytest
import torch
from sdl.loader.data.arrow_rows import ArrowRows


def save(tmp_path, num_rows=50, num_shards=3):
    ds = datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(num_rows)], "n": list(range(num_rows)),
                                     "score": [i / 2 for i in range(num_rows)]})
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=num_shards)
    return tmp_path / "saved"


def double(batch):
    return batch | {"n": batch["n"] * 2}


def test_batch_equals_items_and_columns(tmp_path):
    rows = ArrowRows(save(tmp_path), columns=["n", "text"], max_open=1)
    ids = [49, 0, 17, 17, 33, 2]
    batch = rows.__getitems__(ids)
    assert set(batch) == {"sample_ids", "n", "text"} and batch["n"].dtype == torch.int64
    assert batch["n"].tolist() == ids and batch["text"] == [f"row {i}" for i in ids]
    for row, i in enumerate(ids):
        item = rows[i]
        assert int(item["n"]) == i and item["text"] == batch["text"][row]


def test_picklable_and_transform_is_lazy(tmp_path):
    rows = ArrowRows(save(tmp_path), transform=double)
    rows.__getitems__([0])
    clone = pickle.loads(pickle.dumps(rows))
    assert clone._open is None and clone.identity == rows.identity
    assert clone.__getitems__([3, 40])["n"].tolist() == [6, 80] and clone.__getitems__([3])["score"].tolist() == [1.5]
    assert ArrowRows(tmp_path / "saved", columns=["n"]).identity != rows.identity
    assert rows.describe()["columns"] == {"text": "string", "n": "int64", "score": "double"}


def test_hf_name_in_a_local_cache(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "n": i}) + "\n" for i in range(20)))
    datasets.load_dataset("json", data_files=str(data), cache_dir=str(tmp_path / "cache"))
    rows = ArrowRows(hf="json", hf_cache=tmp_path / "cache", columns=["n"])
    assert len(rows) == 20 and rows.__getitems__([19, 4])["n"].tolist() == [19, 4]


def test_rows_equal_pyarrow_rows_across_files_and_record_batches(tmp_path):
    """Rows gathered by one-row slices of record batches equal the rows pyarrow reads, in request order."""
    import numpy as np
    import pyarrow as pa

    num_rows = 700
    table = pa.table({"n": list(range(num_rows)), "text": [f"row {i}" * (i % 5) for i in range(num_rows)],
                      "tags": [[i, i + 1][: i % 3] for i in range(num_rows)], "score": [i / 4 for i in range(num_rows)]})
    folder = tmp_path / "arrow"
    folder.mkdir()
    for part, (lo, hi) in enumerate([(0, 250), (250, 700)]):
        with pa.ipc.new_file(str(folder / f"data-{part}.arrow"), table.schema) as writer:
            for start in range(lo, hi, 64):  # many record batches per file
                writer.write_batch(table.slice(start, min(64, hi - start)).to_batches()[0])
    rows = ArrowRows(folder, max_open=1)
    ids = np.random.default_rng(0).integers(0, num_rows, size=97).tolist() + [0, 63, 64, 249, 250, 699]
    batch = rows.__getitems__(ids)
    expected = table.take(pa.array(ids)).to_pylist()
    assert batch["n"].tolist() == [row["n"] for row in expected] and batch["score"].tolist() == [row["score"] for row in expected]
    assert batch["text"] == [row["text"] for row in expected] and batch["tags"] == [row["tags"] for row in expected]
    assert rows.__getitems__([])["n"].tolist() == []


def test_a_column_with_a_null_anywhere_is_a_list_in_every_batch(tmp_path):
    """`n` holds one null (row 37, in the last of 3 files); `score` none: `n` is a list of ints (None at 37) in every
    batch, `score` a tensor in every batch, whichever rows a batch holds; the identity ignores what the index adds."""
    ds = datasets.Dataset.from_dict({"n": [None if i == 37 else i for i in range(50)], "score": [i / 2 for i in range(50)]})
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=3)
    rows = ArrowRows(tmp_path / "saved")
    assert rows.index.meta["null_columns"] == ["n"]
    for ids in ([0, 1, 2], [36, 37, 38], [49]):
        batch = rows.__getitems__(ids)
        assert batch["n"] == [None if i == 37 else i for i in ids]
        assert isinstance(batch["score"], torch.Tensor) and batch["score"].tolist() == [i / 2 for i in ids]
    assert rows[0]["n"] == 0 and rows[37]["n"] is None
    from sdl.loader.index.table import source_identity  # what a version-2 index (no null_columns) had: states still load

    before = {k: v for k, v in rows.index.meta.items() if k != "null_columns"}
    assert source_identity("arrow", rows.index.sources, before) == rows.index.identity
    cache = tmp_path / "saved" / ".sdl" / "index.json"  # as an older sdl wrote it: rebuilt, the same dataset
    old = json.loads(cache.read_text())
    del old["meta"]["null_columns"]
    cache.write_text(json.dumps(old))
    again = ArrowRows(tmp_path / "saved")
    assert again.index.meta["null_columns"] == ["n"] and again.identity == rows.identity
    assert json.loads(cache.read_text())["meta"]["null_columns"] == ["n"]



def test_a_saved_dataset_dict_opens_from_its_cache_again(tmp_path):
    """The index of a DatasetDict split records its descriptor as "<split>/state.json": the next open must find the
    cache fresh (it was reported stale on every open after the first), and a rewritten state.json still makes it stale."""
    import pytest
    from sdl.loader.errors import IndexStaleError

    splits = {"train": datasets.Dataset.from_dict({"n": list(range(10))}), "test": datasets.Dataset.from_dict({"n": [7, 8]})}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    for _ in range(3):
        assert ArrowRows(tmp_path / "dd", split="train").__getitems__([9])["n"].tolist() == [9]
    state = tmp_path / "dd" / "train" / "state.json"
    state.write_text(state.read_text() + " ")
    with pytest.raises(IndexStaleError, match="state.json"):
        ArrowRows(tmp_path / "dd", split="train")


def test_a_split_asked_of_a_folder_without_splits_is_refused(tmp_path, capsys):
    """A saved Dataset holds one set of rows: split="validation" would read all of them as if they were that split."""
    import pytest
    from sdl.cli.main import main
    from sdl.loader.errors import InputError

    with pytest.raises(InputError, match="holds no splits .* split 'validation' was asked"):
        ArrowRows(save(tmp_path), split="validation")
    capsys.readouterr()  # datasets' progress bars
    assert main(["index", str(tmp_path / "saved"), "--split", "train"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "drop --split" in err
    assert len(ArrowRows(tmp_path / "saved")) == 50



@pytest.mark.parametrize("num_rows, dtype, says", [
    (6, "int64", "10 rows \\(the index\\), found 6"),
    (10, "float64", "columns {'x': 'int64'} \\(the index\\), found {'x': 'double'}"),
])
def test_a_file_rewritten_in_place_with_other_rows_and_its_mtime_put_back_is_refused_when_opened(tmp_path, num_rows, dtype, says):
    """Same size, same inode, same mtime: only the rows (or the column types) tell (was: a batch shorter than its sample
    ids, its rows shifted onto the next file's; or a column of another type)."""
    import os

    import numpy as np
    import pyarrow as pa
    from sdl.loader.errors import FormatError

    def stream(num_rows, dtype, pad):
        table = pa.table({"x": np.arange(num_rows, dtype=dtype)}).replace_schema_metadata({"p": "z" * pad})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    root = tmp_path / "rows"
    root.mkdir()
    for f in range(2):
        (root / f"data-{f:05d}.arrow").write_bytes(stream(10, "int64", 200))
    rows = ArrowRows(root)
    target = root / "data-00000.arrow"
    stat = os.stat(target)
    other = next(data for pad in range(400) if len(data := stream(num_rows, dtype, pad)) == stat.st_size)
    with open(target, "r+b") as handle:
        handle.write(other)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(FormatError, match=rf"^{target}: expected {says}: the file changed since the index was built; "
                                          rf"run `sdl index {root}` to rebuild it$"):
        rows.__getitems__(list(range(20)))


def test_an_extension_column_reads_whether_or_not_the_process_imported_datasets(tmp_path):
    """`datasets`' Array2D is an Arrow extension type only in a process that imported `datasets`: a file indexed in one
    kind of process opens in the other (a training script imports transformers, `sdl index` does not)."""
    import shutil
    import subprocess
    import sys

    import numpy as np

    features = datasets.Features({"grid": datasets.Array2D((2, 3), "int32"), "n": datasets.Value("int64")})
    datasets.Dataset.from_dict({"grid": [np.arange(6, dtype=np.int32).reshape(2, 3) + i for i in range(10)],
                                "n": list(range(10))}, features=features).save_to_disk(str(tmp_path / "ds"))
    read = ("import sys; from sdl.loader import ArrowRows; b = ArrowRows(sys.argv[1]).__getitems__([9]); "
            "assert 'datasets' not in sys.modules and b['n'].tolist() == [9] and b['grid'][0][1][2] == 14, b")
    for indexed_here in (False, True):  # indexed by the plain process, then by this one (which imported datasets)
        if indexed_here:
            shutil.rmtree(tmp_path / "ds" / ".sdl")
            ArrowRows(tmp_path / "ds")
        subprocess.run([sys.executable, "-c", read, str(tmp_path / "ds")], check=True)
        batch = ArrowRows(tmp_path / "ds").__getitems__([9])
        assert batch["n"].tolist() == [9] and batch["grid"][0][1][2] == 14
