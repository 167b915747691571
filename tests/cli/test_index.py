"""`sdl index` end to end: summary, --json, --validate, joining, and one-line errors that write nothing."""

import json
from pathlib import Path

import pytest
from sdl.cli.main import main
from sdl.loader.index import cache_path


def run(capsys, *args):
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_prints_a_summary_and_writes_the_cache(token_dataset, capsys):
    path = token_dataset(num_tokens=5_000, tokens_per_shard=1_000)
    code, out, _ = run(capsys, "index", path)
    assert code == 0 and "5,000" in out and "uint16" in out and "synthetic" in out
    assert cache_path(path).is_file()


def test_index_json_and_validate(token_dataset, capsys):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    code, out, _ = run(capsys, "index", path, "--validate", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["tokens"] == 3_000 and summary["sources"] == 3 and summary["validation"]["ok"]


def test_validate_failure_exits_1_and_writes_no_cache(token_dataset, capsys):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    shard = path / "shard-000002.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    code, _, err = run(capsys, "index", path, "--validate")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: shard-000002.npy: expected checksum") and "sdl prepare" in err
    assert not cache_path(path).exists()


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "listed but missing", "bad header", "manifest a list"])
def test_bad_input_is_one_line_exit_1_nothing_written(token_dataset, tmp_path, capsys, case):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    shard = path / "shard-000001.npy"
    target = {"missing": tmp_path / "absent", "empty": tmp_path / "empty"}.get(case, path)
    if case == "empty":
        target.mkdir()
    elif case == "truncated":
        shard.write_bytes(shard.read_bytes()[:-10])
    elif case == "listed but missing":
        shard.unlink()
    elif case == "bad header":
        shard.write_bytes(b"not a numpy file")
    elif case == "manifest a list":
        (path / "manifest.json").write_text("[1, 2]")
    code, out, err = run(capsys, "index", target)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not cache_path(target).exists() if target.exists() else True


def test_hf_options_without_hf_are_refused(tmp_path, capsys):
    for command in ("index", "inspect"):
        code, _, err = run(capsys, command, tmp_path, "--hf-cache", tmp_path)
        assert code == 1 and err.count("\n") == 1 and "--hf-cache only applies to --hf NAME" in err, err


def test_inspect_refuses_options_it_would_ignore(token_dataset, capsys):
    config = Path(__file__).resolve().parents[2] / "configs" / "mix-web-code.toml"
    for args, wording in (([config, "--seq-len", "64"], "--seq-len 64 differs from " + f"{config}'s seq_len = 2048"),
                          ([config, "--kind", "zarr", "--show", "2"], "--kind, --show do not apply to a mixture config"),
                          ([token_dataset(num_tokens=1_000), "--stride", "8"], "--stride 8 needs --seq-len")):
        code, _, err = run(capsys, "inspect", *args)
        assert code == 1 and err.count("\n") == 1 and wording in err, err


def test_hf_not_in_cache_says_where_it_looked(tmp_path, capsys):
    code, _, err = run(capsys, "index", "--hf", "someone/thing", "--hf-cache", tmp_path)
    assert code == 1 and f"looked in {tmp_path}/someone___thing" in err


def test_index_joins_job_folders(tmp_path, capsys):
    from sdl.prepare.synthetic import write_synthetic_dataset

    for k in range(2):
        write_synthetic_dataset(tmp_path / "out" / f"job-{k:05d}", num_tokens=1_500, tokens_per_shard=1_000, vocab_size=500)
        manifest_path = tmp_path / "out" / f"job-{k:05d}" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["job"] = {"num_jobs": 2, "job_index": k}
        manifest_path.write_text(json.dumps(manifest))
    code, out, _ = run(capsys, "index", tmp_path / "out", "--json")
    assert code == 0 and json.loads(out)["tokens"] == 3_000 and json.loads(out)["parts"] == 2


def test_zarr_and_arrow_kinds(tmp_path, capsys):
    import datasets
    import zarr

    zarr.create_array(str(tmp_path / "z" / "a.zarr"), shape=(6, 2), chunks=(3, 2), dtype="int32")[:] = 1
    code, out, _ = run(capsys, "index", tmp_path / "z", "--kind", "zarr", "--validate", "--json")
    assert code == 0 and json.loads(out)["items"] == 6
    datasets.Dataset.from_dict({"n": [1, 2, 3]}).save_to_disk(str(tmp_path / "s"))
    code, out, _ = run(capsys, "index", tmp_path / "s", "--json")
    assert code == 0 and json.loads(out)["columns"] == {"n": "int64"}


def test_validate_reports_every_corruption_not_just_the_first(token_dataset, capsys):
    path = token_dataset(num_tokens=4_000, tokens_per_shard=1_000)
    (path / "shard-000000.npy").write_bytes((path / "shard-000000.npy").read_bytes()[:-10])  # truncated
    (path / "shard-000001.npy").write_bytes(b"not a numpy file")                             # bad header
    (path / "shard-000002.npy").unlink()                                                     # listed but missing
    data = bytearray((path / "shard-000003.npy").read_bytes())
    data[-1] ^= 1
    (path / "shard-000003.npy").write_bytes(bytes(data))                                     # checksum
    code, out, err = run(capsys, "index", path, "--validate", "--json")
    lines = err.splitlines()
    assert code == 1 and len(lines) == 4 and all(line.startswith("error: shard-00000") for line in lines)
    assert [f["file"] for f in json.loads(out)["validation"]["failures"]] == [f"shard-00000{i}.npy" for i in range(4)]
    assert "Traceback" not in err and not cache_path(path).exists()


def test_validate_failures_of_zarr_and_arrow_name_the_file_once(tmp_path, capsys):
    import datasets
    import zarr

    zarr.create_array(str(tmp_path / "z" / "a.zarr"), shape=(4, 2), chunks=(4, 2), dtype="int32")[:] = 1
    zarr.create_array(str(tmp_path / "z" / "b.zarr"), shape=(4, 3), chunks=(4, 3), dtype="int32")[:] = 1
    code, _, err = run(capsys, "index", tmp_path / "z", "--validate")
    assert code == 1 and err.count("\n") == 1 and "a.zarr has data [*, 2] int32, b.zarr has data [*, 3] int32" in err
    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "s"))
    (tmp_path / "s" / "data-00000-of-00001.arrow").write_bytes(b"nonsense")
    capsys.readouterr()  # datasets' progress bar
    code, _, err = run(capsys, "index", tmp_path / "s", "--validate")
    assert code == 1 and err.count("\n") == 1 and err.count("data-00000-of-00001.arrow") == 1 and err.count("re-save") == 1


def test_validate_fails_on_duplicate_and_unlisted_shards(token_dataset, capsys):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shards"].append(manifest["shards"][1])  # what two writers appending to one shard log left
    manifest["num_tokens"] += manifest["shards"][1]["num_tokens"]  # each wrote totals over the shards it listed
    manifest["num_docs"] += manifest["shards"][1]["num_docs"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "shard-000007.npy").write_bytes((path / "shard-000000.npy").read_bytes())
    (path / "shard-backup.npy").write_bytes(b"the user's own file: not a shard name")
    code, _, err = run(capsys, "index", path, "--validate")
    lines = err.splitlines()
    assert code == 1 and "Traceback" not in err
    assert any(line.startswith("error: shard-000001.npy: expected each shard listed once") for line in lines)
    assert any(line.startswith("error: shard-000007.npy: expected only shards listed in manifest.json") for line in lines)
    assert "shard-backup" not in err


def test_the_fix_validate_suggests_is_a_command_that_repairs(tmp_path, capsys):
    import shlex
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "prepare"))
    from corpus import dataset_bytes, make_texts, write_jsonl

    data = write_jsonl(tmp_path / "a.jsonl", make_texts(80, seed=3))
    out = tmp_path / "out"
    assert main(["prepare", str(data), str(out), "--tokens-per-shard", "100", "--json"]) == 0
    before = dataset_bytes(out)
    (out / "shard-000002.npy").write_bytes(b"damaged")
    capsys.readouterr()
    code, _, err = run(capsys, "index", out, "--validate")
    assert code == 1
    command = err.split("`")[1]
    assert command == f"sdl prepare --repair {out}"
    assert main(shlex.split(command)[1:]) == 0 and dataset_bytes(out) == before
    assert run(capsys, "index", out, "--validate")[0] == 0


def test_reindexing_after_a_zarr_chunk_went_missing_warns_naming_it_once(tmp_path, capsys):
    # A rebuild cannot tell a lost chunk from one emptied on purpose (both read as fill value): it records it absent,
    # and says which chunks the last index found and are gone now; a rewritten store (new metadata) is not compared.
    zarr = pytest.importorskip("zarr")
    for name in ("a", "b"):
        zarr.create_array(str(tmp_path / "z" / f"{name}.zarr"), shape=(40, 3), chunks=(5, 3), dtype="float32")[:] = 1
    assert run(capsys, "index", tmp_path / "z")[0] == 0
    (tmp_path / "z" / "a.zarr" / "c" / "5" / "0").unlink()
    (tmp_path / "z" / "b.zarr" / "c" / "1" / "0").unlink()
    zarr.create_array(str(tmp_path / "z" / "b.zarr"), shape=(40, 3), chunks=(5, 3), dtype="float32", overwrite=True)[:10] = 1
    code, _, err = run(capsys, "index", tmp_path / "z")
    assert code == 0 and err.count("\n") == 1
    assert err.startswith(f"warning: {tmp_path / 'z'}/a.zarr: chunk(s) 'c/5/0' existed at the last sdl index and are gone")
    assert "restore them and run sdl index" in err
    code, _, err = run(capsys, "index", tmp_path / "z")  # said once: the new index records them
    assert code == 0 and err == ""


def test_a_cache_nested_deeper_than_the_stack_is_one_line_and_sdl_index_rebuilds_it(token_dataset, capsys):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    cache_path(path).parent.mkdir(exist_ok=True)
    cache_path(path).write_text("[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError, was a traceback in both
    code, _, err = run(capsys, "inspect", path)
    assert code == 1 and err == f"error: {cache_path(path)}: corrupt index cache; run `sdl index {path}` to rebuild it\n"
    code, out, _ = run(capsys, "index", path, "--json")
    assert code == 0 and json.loads(out)["tokens"] == 3_000 and json.loads(cache_path(path).read_text())["kind"] == "tokens"
