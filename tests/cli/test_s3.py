"""`sdl index`, `index --validate`, `inspect` and `reshard-ckpt --dataset` on s3:// datasets of a real S3 server (moto):
the same answers as for the local copy, one-line errors naming the object."""

import json
import sys
from pathlib import Path

import boto3
from sdl.loader import TokenWindows, make_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_cli import run, user_cache  # noqa: E402,F401  (user_cache: an autouse fixture)


def test_index_and_validate_on_s3_equal_local(s3_dataset, capsys):
    local, url = s3_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=5_000)
    code, out, _ = run(capsys, "index", url, "--validate", "--json")
    remote = json.loads(out)
    code_local, out_local, _ = run(capsys, "index", local, "--json")
    here = json.loads(out_local)
    assert code == code_local == 0 and remote["validation"]["ok"] and remote["validation"]["bytes_read"] > 6_000
    for key in ("kind", "sources", "tokens", "documents", "dtype", "identity"):
        assert remote[key] == here[key], key
    assert remote["path"] == url
    for args in (["index", url, "--split", "train"], ["index", url, "--split", "train", "--validate"]):
        code, _, err = run(capsys, *args)  # as locally: a split is an Arrow dataset's, named as such
        assert code == 1 and err == f"error: a split ('train') selects part of an Arrow dataset; {url} is a token dataset " \
            "(it holds manifest.json)\n"


def test_validate_on_s3_names_a_corrupt_and_a_missing_object(s3_dataset, capsys):
    _, url = s3_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=5_000)
    bucket = url[5:].split("/")[0]
    client = boto3.client("s3")
    data = bytearray(client.get_object(Bucket=bucket, Key="tokens/shard-000001.npy")["Body"].read())
    data[-2:] = b"\xff\xff"  # id 65535 >= vocab 5,000, and another checksum
    client.put_object(Bucket=bucket, Key="tokens/shard-000001.npy", Body=bytes(data))
    client.delete_object(Bucket=bucket, Key="tokens/shard-000002.npy")
    code, _, err = run(capsys, "index", url, "--validate")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 3, err
    assert lines[0].startswith("error: shard-000001.npy: expected checksum sha256:") and "the bytes changed" in lines[0]
    assert lines[1] == (f"error: shard-000001.npy: expected token ids < vocab size 5,000, found id 65,535; "
                        f"re-run the sdl prepare command that wrote {url} (it uploads only what differs)")
    assert lines[2].startswith("error: shard-000002.npy: expected a shard of 1,000 tokens (listed in the manifest), found no such file")


def test_missing_manifest_on_s3_is_one_line(s3_bucket, capsys):
    code, _, err = run(capsys, "index", f"s3://{s3_bucket}/nothing-here")
    assert code == 1 and err.startswith(f"error: s3://{s3_bucket}/nothing-here: no manifest.json at http://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1


def test_inspect_s3_shows_the_windows(s3_dataset, capsys):
    _, url = s3_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=5_000)
    code, out, _ = run(capsys, "inspect", url, "--seq-len", "8", "--stride", "995", "--show", "2", "--json")
    info = json.loads(out)
    assert code == 0 and info["tokens"] == 3_000 and info["windows"] == 4
    assert [s["ids"] for s in info["samples"]] == [list(range(8)), list(range(995, 1003))]  # the second spans 2 shards


def test_reshard_ckpt_checks_a_state_against_the_s3_copy(s3_dataset, tmp_path, capsys):
    local, url = s3_dataset(num_tokens=5_000, tokens_per_shard=1_000, vocab_size=5_000)
    loader = make_loader(TokenWindows(local, seq_len=50), batch_size=4, rank=0, world_size=1, num_workers=0, device="cpu")
    for step, _ in enumerate(loader):
        if step == 2:
            break
    (tmp_path / "state.json").write_text(json.dumps(loader.state_dict()))
    code, out, err = run(capsys, "reshard-ckpt", tmp_path / "state.json", "--dataset", url, "--json")
    assert code == 0, err
    assert '"matches": true' in out and url in out


def test_index_of_an_s3_dataset_with_another_nested_under_it_leaves_its_manifest_alone(s3_dataset, capsys):
    # A dataset's own manifest joins no parts: `sdl index` never rewrites it as a join of what lies under its prefix
    # (here a validation set at ds/val), as a local `sdl index` of the same layout does not.
    _, url = s3_dataset(num_tokens=3_000, tokens_per_shard=1_000, name="ds")
    s3_dataset(num_tokens=2_000, tokens_per_shard=1_000, name="ds/val")
    s3_bucket, client = url[5:].split("/")[0], boto3.client("s3")
    before = client.get_object(Bucket=s3_bucket, Key="ds/manifest.json")["Body"].read()
    code, out, _ = run(capsys, "index", url, "--json")
    assert code == 0 and json.loads(out)["tokens"] == 3_000
    assert client.get_object(Bucket=s3_bucket, Key="ds/manifest.json")["Body"].read() == before


def test_inspect_reads_past_a_damaged_cached_shard(s3_dataset, tmp_path, capsys):
    _, url = s3_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=5_000)
    args = ("inspect", url, "--seq-len", "100", "--show", "29", "--json")
    code, first, _ = run(capsys, *args)
    (cached,) = (tmp_path / "user-cache").rglob("shard-000002.*.npy")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short in the node cache
    code_again, again, err = run(capsys, *args)  # was: every run failed, advising `sdl prepare --repair <the cache>`
    assert code == code_again == 0 and again == first and json.loads(again)["samples"][-1]["ids"][0] == 2_800, err


def test_a_cache_home_that_is_a_file_is_one_line(s3_dataset, tmp_path, capsys, monkeypatch):
    _, url = s3_dataset(num_tokens=2_000, tokens_per_shard=1_000, vocab_size=5_000)
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    code, _, err = run(capsys, "inspect", url)  # was: a NotADirectoryError traceback
    assert code == 1 and err == (f"error: cache_dir {tmp_path / 'a-file' / 'sdl' / 'objects'}: cannot create or write it "
                                 "(ENOTDIR: Not a directory); pass a writable cache_dir or set XDG_CACHE_HOME\n")
