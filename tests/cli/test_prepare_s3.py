"""`sdl prepare … s3://bucket/prefix` on a real S3 server (moto): objects byte-identical to a local run, keys mirroring
the local layout, the manifest last; SIGKILL mid-upload then a re-run ends byte-identical; a re-run of a finished
upload is "already complete"."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from sdl.cli.main import main
from sdl.loader import TokenWindows
from sdl.prepare import PrepareConfig, prepare

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "prepare"))
from corpus import make_texts, write_jsonl  # noqa: E402


def objects(bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix/`, by its key relative to the prefix."""
    client = boto3.client("s3")
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {o["Key"][len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # staging and the node cache


def test_prepare_to_s3_is_byte_identical_to_local_and_reads_back(s3_bucket, tmp_path, capsys):
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(300, seed=4))
    prepare(PrepareConfig(sources=(str(data),), out=str(tmp_path / "local"), tokens_per_shard=500))
    url = f"s3://{s3_bucket}/ds/v1"
    code = main(["prepare", str(data), url, "--tokens-per-shard", "500", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["out"] == url and report["status"] == "complete"
    assert objects(s3_bucket, "ds/v1") == local_files(tmp_path / "local")  # same keys (the local layout), same bytes
    assert not (tmp_path / "user-cache" / "sdl" / "staging").exists() or not any((tmp_path / "user-cache" / "sdl" / "staging").iterdir())
    remote, here = TokenWindows(url, seq_len=64, cache_dir=tmp_path / "cache"), TokenWindows(tmp_path / "local", seq_len=64)
    ids = list(range(len(here)))
    assert np.array_equal(remote.__getitems__(ids)["input_ids"].numpy(), here.__getitems__(ids)["input_ids"].numpy())
    code = main(["prepare", str(data), url, "--tokens-per-shard", "500", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["status"] == "already complete"
    code = main(["prepare", str(data), url, "--tokens-per-shard", "400"])
    assert code == 1 and "pass --overwrite to replace it" in capsys.readouterr().err


def test_an_overwrite_with_a_smaller_dataset_leaves_the_prefix_as_a_local_run_would(s3_bucket, tmp_path, capsys):
    """200 documents in shards of 300 tokens, then --overwrite with 20: the old shards past the new ones are deleted
    (after the new manifest is up), and the store holds exactly a local run's files; objects beside the dataset stay.
    `sdl index --validate` then passes, and fails on a shard object the manifest does not list, as it does locally."""
    big = write_jsonl(tmp_path / "big.jsonl", make_texts(200, seed=4))
    small = write_jsonl(tmp_path / "small.jsonl", make_texts(20, seed=5))
    url = f"s3://{s3_bucket}/ds/shrink"
    assert main(["prepare", str(big), url, "--tokens-per-shard", "300"]) == 0
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="ds/shrink/notes/shard-000999.npy", Body=b"not the dataset's")
    before = objects(s3_bucket, "ds/shrink")
    assert main(["prepare", str(small), url, "--tokens-per-shard", "300", "--overwrite"]) == 0
    prepare(PrepareConfig(sources=(str(small),), out=str(tmp_path / "local"), tokens_per_shard=300))
    after = objects(s3_bucket, "ds/shrink")
    assert after.pop("notes/shard-000999.npy") == b"not the dataset's"
    assert after == local_files(tmp_path / "local") and len([k for k in before if k.startswith("shard-")]) > len(after)
    capsys.readouterr()
    assert main(["index", "--validate", url]) == 0
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="ds/shrink/shard-000999.npy", Body=b"a second writer's")
    assert main(["index", "--validate", url]) == 1  # as a local folder with a shard file its manifest does not list
    assert "shard-000999.npy: expected only shards listed in manifest.json, found a shard file the manifest does not list" in capsys.readouterr().err


def test_a_refused_run_leaves_a_finished_dataset_in_the_store_as_it_was(s3_bucket, tmp_path, capsys):
    """Refused before any work: an option no input uses, even with --overwrite, deletes nothing; refused for other
    arguments (no --overwrite), it leaves no staging folder, so the next run still finds the dataset "already complete"."""
    text = tmp_path / "a.txt"
    text.write_text("a plain text document " * 50)
    url = f"s3://{s3_bucket}/ds/kept"
    assert main(["prepare", str(text), url, "--tokens-per-shard", "100"]) == 0
    before = objects(s3_bucket, "ds/kept")
    capsys.readouterr()
    assert main(["prepare", str(text), url, "--tokens-per-shard", "100", "--text-field", "body", "--overwrite"]) == 1
    assert "--text-field body" in capsys.readouterr().err and objects(s3_bucket, "ds/kept") == before
    assert main(["prepare", str(text), url, "--tokens-per-shard", "90"]) == 1
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["prepare", str(text), url, "--tokens-per-shard", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "already complete" and not report["resumed"] and objects(s3_bucket, "ds/kept") == before


def test_a_rerun_killed_while_fetching_the_finished_journal_leaves_the_store_as_it_was(s3_bucket, tmp_path, capsys, monkeypatch):
    """Re-running a finished upload fetches its journal and manifest first; killed halfway through the manifest, it
    leaves no staging folder, so the next run fetches again and finds it complete: the cut manifest is never uploaded."""
    from sdl.loader.storage.client import S3Client

    data = write_jsonl(tmp_path / "a.jsonl", make_texts(100, seed=4))
    url = f"s3://{s3_bucket}/ds/fetched"
    assert main(["prepare", str(data), url, "--tokens-per-shard", "500"]) == 0
    stored = objects(s3_bucket, "ds/fetched")
    download = S3Client.download

    def killed_in_the_manifest(self, bucket, key, handle, on_chunk=None):
        if key.endswith("manifest.json"):
            handle.write(stored["manifest.json"][:100])
            raise KeyboardInterrupt  # the process dies here
        return download(self, bucket, key, handle, on_chunk)

    monkeypatch.setattr(S3Client, "download", killed_in_the_manifest)
    assert main(["prepare", str(data), url, "--tokens-per-shard", "500"]) == 130  # (the CLI reports the interrupt)
    monkeypatch.setattr(S3Client, "download", download)
    capsys.readouterr()
    assert main(["prepare", str(data), url, "--tokens-per-shard", "500", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "already complete"
    assert objects(s3_bucket, "ds/fetched") == stored


def test_an_overwrite_killed_midway_leaves_no_manifest_over_a_mix_of_shards(s3_bucket, tmp_path, capsys, monkeypatch):
    """--overwrite removes the store's manifest before replacing any shard: killed before its own manifest is up, the
    prefix holds no dataset (sdl index says so), never the old manifest over some new shards; a re-run finishes."""
    from sdl.prepare import upload

    data = write_jsonl(tmp_path / "a.jsonl", make_texts(100, seed=4))
    url = f"s3://{s3_bucket}/ds/over"
    assert main(["prepare", str(data), url, "--tokens-per-shard", "500"]) == 0
    monkeypatch.setattr(upload.Uploader, "finish", lambda self: (self.stop(), (_ for _ in ()).throw(KeyboardInterrupt()))[1])
    assert main(["prepare", str(data), url, "--tokens-per-shard", "300", "--overwrite"]) == 130
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    assert "manifest.json" not in objects(s3_bucket, "ds/over")
    capsys.readouterr()
    assert main(["index", url]) == 1 and "manifest" in capsys.readouterr().err
    assert main(["prepare", str(data), url, "--tokens-per-shard", "300", "--overwrite"]) == 0
    prepare(PrepareConfig(sources=(str(data),), out=str(tmp_path / "local"), tokens_per_shard=300))
    assert json.loads(objects(s3_bucket, "ds/over")["manifest.json"]) == json.loads((tmp_path / "local" / "manifest.json").read_text())


def test_an_overwrite_over_a_killed_runs_staging_uploads_the_files_it_rewrites(s3_bucket, tmp_path, monkeypatch):
    """A run of input A stopped midway leaves its staging folder; `--overwrite` with input B rewrites shard files of
    the same names there. The upload thread has already put (and seen) A's leftovers before the local run replaced
    them (forced here: the run claims its folder only after the thread's first pass), and still B's files are what the
    store ends with, as a local run of B writes them."""
    import threading

    from sdl.prepare import pipeline, upload

    a, b = (write_jsonl(tmp_path / f"{name}.jsonl", make_texts(200, seed=seed)) for name, seed in (("a", 4), ("b", 5)))
    url = f"s3://{s3_bucket}/ds/again"

    def stop_after_4(progress):
        if progress.num_shards >= 4:
            raise KeyboardInterrupt  # killed here: the staging folder stays as it is
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(sources=(str(a),), out=url, tokens_per_shard=300), progress=stop_after_4)
    passed, scan, claim = threading.Event(), upload.Uploader.upload_finished_shards, pipeline.claim_output

    def scan_and_tell(self):
        scan(self)
        passed.set()

    def claim_after_a_pass(*args):
        assert passed.wait(60), "the upload thread never looked at the staging folder"
        return claim(*args)
    monkeypatch.setattr(upload.Uploader, "upload_finished_shards", scan_and_tell)
    monkeypatch.setattr(pipeline, "claim_output", claim_after_a_pass)
    assert main(["prepare", str(b), url, "--tokens-per-shard", "300", "--overwrite"]) == 0
    prepare(PrepareConfig(sources=(str(b),), out=str(tmp_path / "local"), tokens_per_shard=300))
    assert objects(s3_bucket, "ds/again") == local_files(tmp_path / "local")


@pytest.mark.slow
def test_sigkill_during_prepare_to_s3_then_rerun_is_byte_identical(s3_bucket, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(400, seed=9, max_words=60))
    prepare(PrepareConfig(sources=(str(data),), out=str(tmp_path / "whole"), tokens_per_shard=400))
    url = f"s3://{s3_bucket}/killed"
    command = [sys.executable, "-m", "sdl.cli.main", "prepare", str(data), url, "--tokens-per-shard", "400", "--num-proc", "2", "--json"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "user-cache")}
    client = boto3.client("s3")
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if client.list_objects_v2(Bucket=s3_bucket, Prefix="killed/").get("KeyCount", 0) >= 20:
            break
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)  # the CLI, its upload thread and its worker processes, mid-run
    child.wait()
    listed = objects(s3_bucket, "killed")
    assert listed and "manifest.json" not in listed, "the run finished before it was killed; make it slower"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert finished.returncode == 0, finished.stderr  # (the journals differ: they record --num-proc)
    assert json.loads(finished.stdout)["resumed"] is True
    data = {key: value for key, value in objects(s3_bucket, "killed").items() if not key.startswith(".sdl/")}
    assert data == {key: value for key, value in local_files(tmp_path / "whole").items() if not key.startswith(".sdl/")}


def test_num_jobs_parts_on_s3_join_like_local_ones(s3_bucket, tmp_path, capsys):
    data = [write_jsonl(tmp_path / f"{name}.jsonl", make_texts(60, seed=i)) for i, name in enumerate("abc")]
    for job in range(2):
        for out in (str(tmp_path / "local" / f"job-{job:05d}"), f"s3://{s3_bucket}/parts/job-{job:05d}"):
            assert main(["prepare", *map(str, data), out, "--tokens-per-shard", "300", "--num-jobs", "2",
                         "--job-index", str(job), "--json"]) == 0
    capsys.readouterr()
    assert main(["index", str(tmp_path / "local"), "--json"]) == 0
    here = json.loads(capsys.readouterr().out)
    assert main(["index", f"s3://{s3_bucket}/parts", "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["parts"] == here["parts"] == 2 and remote["identity"] == here["identity"]
    assert objects(s3_bucket, "parts")["manifest.json"] == (tmp_path / "local" / "manifest.json").read_bytes()
