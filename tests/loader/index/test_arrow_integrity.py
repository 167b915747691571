"""Arrow datasets that would read short are refused: a HF cache split missing a shard or rows, a file cut off by a
killed writer, a damaged state.json or dataset_dict.json. What the installed `datasets` and pyarrow write passes."""

import json

import datasets
import pyarrow as pa
import pytest
from sdl.loader.data.arrow_rows import ArrowRows
from sdl.loader.errors import FormatError
from sdl.loader.index import build_index
from sdl.loader.index.arrow import check_arrow_end
from sdl.loader.index.hf_cache import find_hf_dataset

TABLE = pa.table({"n": pa.array(range(12), pa.int64()), "text": [f"row {i}" for i in range(12)]})


def sharded_cache(tmp_path):
    """A HF cache folder that `datasets` wrote with the train split as json-train-0000k-of-00002.arrow (10 rows each)."""
    files = []
    for k in range(2):
        path = tmp_path / f"d{k}.jsonl"
        path.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(k * 10, k * 10 + 10)))
        files.append(str(path))
    datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "cache"), num_proc=2)
    folder = find_hf_dataset("json", cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in folder.glob("*.arrow")) == ["json-train-00000-of-00002.arrow", "json-train-00001-of-00002.arrow"]
    return folder


def test_hf_cache_split_missing_a_shard_is_refused(tmp_path):
    folder = sharded_cache(tmp_path)
    assert build_index(folder, split="train", write_cache=False).total == 20
    (folder / "json-train-00001-of-00002.arrow").unlink()
    with pytest.raises(FormatError, match=r"2 shards but 1 of them is missing \(json-train-00001-of-00002\.arrow\).*re-download"):
        build_index(folder, split="train")
    with pytest.raises(FormatError, match="json-train-00001-of-00002.arrow"):
        ArrowRows(hf="json", hf_cache=tmp_path / "cache", split="train")


def test_hf_cache_rows_must_equal_dataset_info(tmp_path):
    folder = sharded_cache(tmp_path)
    info = json.loads((folder / "dataset_info.json").read_text())
    info["splits"]["train"]["num_examples"] = 40
    (folder / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(FormatError, match="split 'train' holds 20 rows in its Arrow files, dataset_info.json records 40"):
        build_index(folder, split="train")
    info["splits"] = [{"name": "train", "num_examples": 20}]  # the older list form
    (folder / "dataset_info.json").write_text(json.dumps(info))
    assert build_index(folder, split="train").total == 20


def write_ipc(path, writer_of, options=None, batches=3, close=True):
    """TABLE as `batches` record batches; close=False leaves what a writer killed before its last batch leaves."""
    sink = pa.BufferOutputStream()
    writer = writer_of(sink, TABLE.schema, options=options)
    parts = TABLE.to_batches(max_chunksize=-(-TABLE.num_rows // batches))
    for batch in parts if close else parts[:-1]:
        writer.write_batch(batch)
    if close:
        writer.close()
    path.write_bytes(sink.getvalue().to_pybytes())
    return path


def test_stream_cut_between_batches_is_refused(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    whole = write_ipc(root / "a.arrow", pa.ipc.new_stream)
    assert build_index(root).total == 12
    cut = write_ipc(tmp_path / "cut.arrow", pa.ipc.new_stream, close=False)
    assert whole.read_bytes().startswith(cut.read_bytes())
    assert pa.ipc.open_stream(cut.read_bytes()).read_all().num_rows == 8  # what pyarrow alone makes of it
    whole.write_bytes(cut.read_bytes())
    with pytest.raises(FormatError, match=r"a\.arrow: truncated Arrow file.*end-of-stream marker ff ff ff ff 00 00 00 00.*re-create"):
        build_index(root)


def test_legacy_stream_passes(tmp_path):
    path = write_ipc(tmp_path / "t.arrow", pa.ipc.new_stream, pa.ipc.IpcWriteOptions(use_legacy_format=True))
    check_arrow_end(path)
    assert build_index(tmp_path).total == 12


@pytest.mark.parametrize("writer_of", [pa.ipc.new_stream, pa.ipc.new_file])
def test_complete_files_pass_and_every_cut_is_refused(tmp_path, writer_of):
    path = write_ipc(tmp_path / "t.arrow", writer_of)
    check_arrow_end(path)
    data = path.read_bytes()
    for size in range(8, len(data), 8):  # IPC messages are 8-byte aligned: every boundary a killed writer can leave
        path.write_bytes(data[:size])
        with pytest.raises(FormatError, match="truncated Arrow file"):
            check_arrow_end(path)


def test_files_datasets_writes_pass(tmp_path):
    ds = datasets.Dataset.from_dict({"n": list(range(30))})
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=3)
    datasets.Dataset.from_dict({"n": []}, features=ds.features).save_to_disk(str(tmp_path / "empty"))
    written = sorted((tmp_path / "saved").glob("*.arrow")) + sorted((tmp_path / "empty").glob("*.arrow"))
    assert len(written) >= 3
    for path in written:
        check_arrow_end(path)
    assert build_index(tmp_path / "saved").total == 30


@pytest.mark.parametrize("state, found", [
    ("null", "found null"),
    ('{"_data_files": [{"file": "x.arrow"}]}', '"file": "x.arrow"'),
    ('{"_data_files": "data-00000-of-00001.arrow"}', "data-00000-of-00001.arrow"),
])
def test_damaged_state_json_is_refused(tmp_path, state, found):
    datasets.Dataset.from_dict({"n": list(range(5))}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "saved" / "state.json").write_text(state)
    with pytest.raises(FormatError, match=r"state\.json: expected a save_to_disk state\.json.*filename.*" + found):
        build_index(tmp_path / "saved")


def test_damaged_dataset_dict_json_is_refused(tmp_path):
    ds = datasets.Dataset.from_dict({"n": list(range(5))})
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    (tmp_path / "dd" / "dataset_dict.json").write_text('{"splits": "train"}')
    with pytest.raises(FormatError, match=r"dataset_dict\.json: expected .* split names; found \{\"splits\": \"train\"\}"):
        build_index(tmp_path / "dd", split="train")
