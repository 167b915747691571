"""ArrowRows: a batch equals the per-item reads, columns selected, picklable, transform lazy; HF cache by name."""

import json
import pickle

import datasets
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
