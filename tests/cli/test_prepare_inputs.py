"""`sdl prepare` on inputs that are not what they seem: broken symlinks, UTF-16 or binary text, a saved dataset inside
a folder, damaged Parquet/Arrow files; and options that no input would use (--split, --text-field). Each is one `error:`
line naming the input or option, and a first run leaves no output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sdl.cli.main import main


def sdl(capsys, *args):
    code = main(["prepare", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _texts(num_rows: int) -> list[str]:
    return [f"row {i}: the data loader reads shards " * 3 for i in range(num_rows)]


def _corrupt_parquet(path: Path) -> None:
    """Two snappy row groups whose second column chunk is overwritten in its middle: the footer still opens."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": _texts(2048)}), path, row_group_size=1024, compression="snappy", use_dictionary=False)
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(0)
    assert chunk.data_page_offset + chunk.total_compressed_size < path.stat().st_size
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    with open(path, "r+b") as handle:
        handle.seek(middle - 32)
        handle.write(b"\xff" * 64)


def _truncated_arrow(path: Path) -> None:
    """An Arrow IPC stream of two batches, cut in the middle of the second one's body."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    batch = pa.record_batch({"text": _texts(1000)})
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
        first_end = sink.tell()
        writer.write_batch(batch)
    data = sink.getvalue().to_pybytes()
    path.write_bytes(data[:first_end + (len(data) - first_end) // 2])


@pytest.fixture
def odd_inputs(tmp_path):
    import datasets

    for name in ("dangling", "loop", "nested", "nested_one", "linked"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ok.txt").write_text("fine text")
    os.symlink("nowhere.txt", tmp_path / "dangling" / "gone.txt")
    os.symlink("y.txt", tmp_path / "loop" / "x.txt")
    os.symlink("../dangling", tmp_path / "linked" / "more")  # a folder link: its files would be skipped unsaid
    os.symlink("x.txt", tmp_path / "loop" / "y.txt")
    (tmp_path / "u16le.txt").write_bytes("hello world".encode("utf-16-le"))
    (tmp_path / "nul.txt").write_bytes(b"line one\nhello\x00world")
    splits = {"train": datasets.Dataset.from_dict({"text": ["train a", "train b"]}),
              "test": datasets.Dataset.from_dict({"text": ["test a"]})}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "nested" / "dd"))
    splits["train"].save_to_disk(str(tmp_path / "nested_one" / "single"))
    _corrupt_parquet(tmp_path / "corrupt.parquet")
    _truncated_arrow(tmp_path / "truncmid.arrow")
    return tmp_path


ODD_INPUTS = {
    "dangling link in a folder": (["dangling"], [], "dangling/gone.txt: a dangling symbolic link (-> nowhere.txt)"),
    "dangling link by glob": (["dangling/*.txt"], [], "dangling/gone.txt: a dangling symbolic link (-> nowhere.txt)"),
    "symlink loop in a folder": (["loop"], [], "loop/x.txt: a symbolic link loop (-> y.txt)"),
    "symlink to a folder in a folder": (["linked"], [], "linked/more: a symbolic link to a folder (-> ../dangling)"),
    "utf-16 without a BOM": (["u16le.txt"], [], "u16le.txt: a NUL byte at byte 1 (line 1), expected UTF-8 text; "
                                                "the file looks like UTF-16 or binary: convert it to UTF-8"),
    "NUL in text": (["nul.txt"], [], "nul.txt: a NUL byte at byte 14 (line 2)"),
    "saved DatasetDict in a folder": (["nested"], [], "nested/dd: a HuggingFace save_to_disk dataset inside the input folder"),
    "saved DatasetDict in a folder, skip": (["nested"], ["--on-error", "skip"], "(with --split NAME for a DatasetDict)"),
    "saved Dataset in a folder": (["nested_one"], [], "nested_one/single: a HuggingFace save_to_disk dataset inside"),
    "corrupt parquet row group": (["corrupt.parquet"], [], "corrupt.parquet: cannot read past row 1,024 ("),
    "arrow cut mid-batch": (["truncmid.arrow"], [], "truncmid.arrow: cannot read past row 1,000 ("),
    "--split for inputs without splits": (["nested_one/single", "dangling/ok.txt"], ["--split", "test"],
                                          "--split test picks a split of a HuggingFace dataset name or a saved DatasetDict folder"),
    "--text-field for plain text": (["dangling/ok.txt"], ["--text-field", "body"],
                                    "--text-field body names the text field of JSONL, Parquet or Arrow records, and every input is plain text"),
}


@pytest.mark.parametrize("case", sorted(ODD_INPUTS))
def test_odd_input_is_one_line_error_and_leaves_no_output(odd_inputs, capsys, case):
    sources, flags, wording = ODD_INPUTS[case]
    out = odd_inputs / "out"
    code, _, err = sdl(capsys, *[odd_inputs / s for s in sources], out, *flags)
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert wording in err, err
    assert "cannot write" not in err and "free space" not in err
    if case.startswith(("corrupt", "arrow")):
        assert "the file is damaged (corrupt or truncated); re-create or remove it" in err
    assert not out.exists()


def test_a_saved_dataset_passed_itself_reads_only_its_split(odd_inputs, capsys):
    """The way out the refusal names works: the DatasetDict as its own input reads the chosen split only."""
    import json

    out = odd_inputs / "out"
    code, stdout, err = sdl(capsys, odd_inputs / "nested" / "dd", out, "--split", "test", "--json")
    assert code == 0, err
    assert json.loads(stdout)["num_docs"] == 1
    code, stdout, err = sdl(capsys, odd_inputs / "nested_one" / "single", odd_inputs / "out2", "--text-field", "text", "--json")
    assert code == 0 and json.loads(stdout)["num_docs"] == 2, err  # the default, named: nothing is ignored


def test_a_nul_text_file_is_skipped_with_on_error_skip(odd_inputs, capsys):
    import json

    code, stdout, err = sdl(capsys, odd_inputs / "u16le.txt", odd_inputs / "dangling" / "ok.txt", odd_inputs / "out",
                            "--on-error", "skip", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["num_docs"] == 1 and report["num_skipped"] == 1


def test_a_recursive_glob_reads_through_a_folder_link_once(tmp_path, capsys):
    """`DIR/**` matches the linked folder itself (Python's glob follows it): its files are inputs the user named."""
    import json

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "t.txt").write_text("a document behind the link")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.txt").write_text("a document beside the link")
    os.symlink("../real", tmp_path / "in" / "linked")
    code, stdout, err = sdl(capsys, f"{tmp_path}/in/**", tmp_path / "out", "--json")
    assert code == 0, err
    assert json.loads(stdout)["num_docs"] == 2


def test_a_worker_count_beyond_any_machine_is_one_line(tmp_path, capsys):
    # 10^22 processes overflowed the pool's semaphore (OverflowError traceback)
    (tmp_path / "a.jsonl").write_text('{"text": "a b"}\n')
    code = main(["prepare", str(tmp_path / "a.jsonl"), str(tmp_path / "out"), "--num-proc", "99999999999999999999999"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: --num-proc is 99,999,999,999,999,999,999,999, expected at most 4,096")
    assert not (tmp_path / "out").exists()


def test_a_world_size_beyond_any_cluster_is_one_line(tmp_path, capsys, token_dataset):
    # the plan lists every rank: 10^22 of them never finished
    import json

    from sdl.loader import TokenWindows, make_loader

    state = make_loader(TokenWindows(token_dataset(num_tokens=4_000, tokens_per_shard=1_000), seq_len=8), 4, num_workers=0,
                        device="cpu").state_dict()
    (tmp_path / "state.json").write_text(json.dumps(state))
    code = main(["reshard-ckpt", str(tmp_path / "state.json"), "--world-size", "99999999999999999999999"])
    err = capsys.readouterr().err
    assert code == 1 and err == "error: --world-size is 99,999,999,999,999,999,999,999, expected at most 1,048,576 ranks\n"


def test_the_output_folder_inside_the_input_folder_is_not_read_as_input(tmp_path, capsys):
    # `sdl prepare data/ data/tokens`: the second run read data/tokens/manifest.json as a JSONL document
    import json

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text('{"text": "alpha beta gamma"}\n')
    for spec in (str(data), str(data / "*"), str(data / "**" / "*.json*")):
        for _ in range(2):  # the second run resumes: the same inputs, the output skipped
            assert main(["prepare", spec, str(data / "tokens"), "--json"]) == 0
            report = json.loads(capsys.readouterr().out)
            assert report["num_docs"] == 1 and report["num_sources"] == 1
    code = main(["prepare", str(data), str(tmp_path / "elsewhere")])  # another sdl dataset inside an input folder
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {data / 'tokens'}: a token dataset (sdl prepare's output) inside the input folder {data}")
    code = main(["prepare", str(data / "tokens"), str(tmp_path / "again")])  # or given as an input itself
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: {data / 'tokens'}: a token dataset (sdl prepare's output) given as an input")


def test_a_dataset_whose_prepare_has_not_finished_says_so(tmp_path, capsys):
    # killed before its manifest (written last): shards and the journal are there; was "expected a token dataset"
    (tmp_path / "a.jsonl").write_text("".join(f'{{"text": "document {i} " }}\n' for i in range(200)))
    assert main(["prepare", str(tmp_path / "a.jsonl"), str(tmp_path / "out"), "--tokens-per-shard", "100"]) == 0
    written = (tmp_path / "out" / "manifest.json").read_bytes()
    (tmp_path / "out" / "manifest.json").unlink()
    capsys.readouterr()
    for command in (["index"], ["inspect"]):
        assert main([*command, str(tmp_path / "out")]) == 1
        assert capsys.readouterr().err == (f"error: {tmp_path / 'out'}: an unfinished sdl prepare (shards and its journal, no "
                                           "manifest.json yet); wait for it if it is still running, else re-run the same sdl "
                                           "prepare command to finish it\n")
    assert main(["prepare", str(tmp_path / "a.jsonl"), str(tmp_path / "out"), "--tokens-per-shard", "100"]) == 0
    assert main(["index", str(tmp_path / "out")]) == 0  # the re-run finished it: the very same manifest
    assert (tmp_path / "out" / "manifest.json").read_bytes() == written
    (tmp_path / "out" / "manifest.json").write_text("{ cut")  # damaged: the same re-run writes it again
    assert main(["index", str(tmp_path / "out")]) == 1 and "re-run the sdl prepare command that made it" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "a.jsonl"), str(tmp_path / "out"), "--tokens-per-shard", "100"]) == 0
    assert (tmp_path / "out" / "manifest.json").read_bytes() == written


def test_a_refused_prepare_leaves_the_users_folder_as_it_was(tmp_path, capsys):
    # the lock's cache folder was left behind, empty, in a folder of the user's own files
    (tmp_path / "a.jsonl").write_text('{"text": "a b"}\n')
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file")
    assert main(["prepare", str(tmp_path / "a.jsonl"), str(mine)]) == 1
    assert "already holds files not written by this sdl prepare" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
