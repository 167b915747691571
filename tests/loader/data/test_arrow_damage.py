"""The law for damaged Arrow files: a read never crashes the process and never leaks a traceback. Damage to the
structure (schema, a record batch's metadata, any offsets, bytes of a string that are no longer UTF-8) is one
FormatError line naming the file and `sdl index --validate`, through `ArrowRows[i]`, `__getitems__`,
`sdl inspect --show` and `make_loader` with 0 and 2 workers; damage no check can see (other numbers) reads as it is.
Each damage is read in a process of its own (`arrow_damage.py`): a read past a memory map kills it with a signal."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("arrow_damage.py")


def run_helper(*args):
    done = subprocess.run([sys.executable, str(HELPER), *map(str, args)], capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode:
        last = lines[-1] if lines else {}
        pytest.fail(f"the reader died (exit {done.returncode}) at {last}: {done.stderr[-2000:]}")
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["stream", "file"])
def test_every_damage_is_one_format_error_line_on_every_read(tmp_path, fmt):
    results = [line for line in run_helper("named", fmt, tmp_path) if line["outcome"] != "started"]
    assert len(results) == 8 * 5
    for line in results:
        if line["damage"] == "number bytes":  # other numbers: nothing to see, read as they are
            assert line["outcome"] == "ok", line
            continue
        assert line["outcome"] == "FormatError", line
        message = line["message"]
        assert message.startswith(str(tmp_path)) and "\n" not in message, line
        if line["damage"] != "schema":  # a file that does not open: "re-save", as before
            assert "--validate" in message and ("expected offsets and buffers inside it" in message or "expected UTF-8" in message)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["stream", "file"])
def test_damage_anywhere_in_a_file_is_no_crash(tmp_path, fmt):
    """8 bytes of "XXXXXXXX" or 0xff at every 16th byte of a file: each read returns rows or one FormatError line."""
    (result,) = run_helper("sweep", fmt, tmp_path, 16)
    assert result["bad"] == [] and result["outcomes"].get("FormatError", 0) > 100


def test_each_record_batch_is_checked_once_when_first_used(tmp_path, monkeypatch):
    """The check reads a batch's offsets once per process; rows of batches not read are not checked."""
    import pyarrow as pa
    from sdl.loader.data import arrow_rows
    from sdl.loader.data.arrow_rows import ArrowRows

    folder = tmp_path / "a"
    folder.mkdir()
    table = pa.table({"text": [f"row {i}" for i in range(100)], "n": list(range(100))})
    with pa.ipc.new_stream(str(folder / "a.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=10)
    checked = []
    real = arrow_rows.check_record_batch
    monkeypatch.setattr(arrow_rows, "check_record_batch", lambda batch, where, number, *rest: (checked.append(number),
                                                                                              real(batch, where, number, *rest)))
    rows = ArrowRows(folder)
    for _ in range(3):
        assert rows.__getitems__([5, 15, 7, 99])["text"] == ["row 5", "row 15", "row 7", "row 99"]
    assert checked == [0, 1, 9]


def test_check_record_batch_refuses_what_full_validation_refuses(tmp_path):
    """Offsets that decrease or leave their buffer, dictionary indices outside their dictionary, for nested types too."""
    import numpy as np
    import pyarrow as pa
    from sdl.loader.errors import FormatError
    from sdl.loader.index.arrow_check import check_record_batch

    def offsets_set(array, row, value):  # a copy of array's offsets with offset `row` set to `value`
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32).copy()
        offsets[row] = value
        return pa.py_buffer(offsets.tobytes())

    text = pa.array([f"row {i}" for i in range(20)])
    tags = pa.array([[f"t{j}" for j in range(i % 3)] for i in range(20)])
    bad_text = pa.Array.from_buffers(pa.string(), 20, [None, offsets_set(text, 7, 10_000), text.buffers()[2]])
    child = tags.values
    bad_child = pa.Array.from_buffers(pa.string(), len(child), [None, offsets_set(child, 3, -5), child.buffers()[2]])
    bad_tags = pa.Array.from_buffers(tags.type, 20, [None, tags.buffers()[1]], children=[bad_child])
    words = pa.array(["a", "b"] * 10).dictionary_encode()
    indices = np.asarray(words.indices).copy()
    indices[4] = 9
    bad_words = pa.DictionaryArray.from_arrays(pa.array(indices), words.dictionary, safe=False)
    structs = pa.StructArray.from_arrays([bad_tags], names=["tags"])
    good = {"text": text, "tags": tags, "words": words, "s": pa.StructArray.from_arrays([tags], names=["tags"])}
    check_record_batch(pa.record_batch(good), "f.arrow", 0, 0, "root")
    for name, bad in {"text": bad_text, "tags": bad_tags, "words": bad_words, "s": structs}.items():
        with pytest.raises(pa.ArrowInvalid):
            pa.record_batch(good | {name: bad}).validate(full=True)
        with pytest.raises(FormatError, match=rf"^f\.arrow: damaged Arrow record batch 3 \(rows 60 to 79 of the file\): "
                                              rf"expected offsets and buffers inside it, found column '{name}': .*sdl index root --validate"):
            check_record_batch(pa.record_batch(good | {name: bad}), "f.arrow", 3, 60, "root")


def test_a_damaged_schema_or_extension_value_is_a_format_error(tmp_path):
    """What a damaged schema or extension column raises in Python (a name not UTF-8, Array2D metadata that does not
    parse, an Array2D row of the wrong shape: `datasets`' own code raises ValueError) is a FormatError naming the file."""
    import struct

    import datasets
    import numpy as np
    import pyarrow as pa
    from sdl.loader.data.arrow_rows import ArrowRows
    from sdl.loader.errors import FormatError

    features = datasets.Features({"grid": datasets.Array2D((2, 3), "float32"), "text": datasets.Value("string")})
    data = datasets.Dataset.from_dict({"grid": [np.full((2, 3), i) for i in range(20)], "text": [f"t{i}" for i in range(20)]},
                                      features=features)
    data.save_to_disk(str(tmp_path / "pristine"))
    name = "data-00000-of-00001.arrow"
    source = pa.memory_map(str(tmp_path / "pristine" / name))
    base = source.read_buffer().address
    source.seek(0)
    rows_at = pa.ipc.open_stream(source).read_all().column("grid").chunks[0].storage.buffers()[1].address - base
    pristine = (tmp_path / "pristine" / name).read_bytes()
    name_at = pristine.rindex(struct.pack("<I", 4) + b"grid") + 4
    for damage, (start, patch, expected) in {
        "name": (name_at, b"\xff", "not a readable Arrow file"),
        "extension": (pristine.rindex(b'"float32"'), b'"fl/at32"', "not a readable Arrow file"),
        "shape": (rows_at, bytes(8), r"column 'grid', row 0 of the file: expected the declared shape \(2, 3\), found 0 items on axis 0"),
    }.items():
        (tmp_path / damage).mkdir()
        (tmp_path / damage / "state.json").write_bytes((tmp_path / "pristine" / "state.json").read_bytes())
        (tmp_path / damage / name).write_bytes(pristine[:start] + patch + pristine[start + len(patch):])
        with pytest.raises(FormatError, match=rf"^{tmp_path / damage / name}: {expected}"):
            ArrowRows(tmp_path / damage).__getitems__(list(range(20)))
