"""`sdl index`, `index --validate` and `inspect` on Arrow and zarr datasets in a real S3 server (moto): the same answers
as for the local copy, and a bad object named in one `error:` line."""

import json
import sys
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_cli import run, user_cache  # noqa: E402,F401  (user_cache: an autouse fixture)


@pytest.mark.parametrize("kind", ["arrow", "zarr"])
def test_index_validate_and_inspect_on_s3_equal_local(kind, s3_arrow, s3_zarr, capsys):
    local, url = s3_arrow if kind == "arrow" else s3_zarr
    code, out, err = run(capsys, "index", url, "--validate", "--json")
    assert code == 0, err
    remote = json.loads(out)
    _, out_local, _ = run(capsys, "index", local, "--json")
    here = json.loads(out_local)
    assert remote["validation"]["ok"] and remote["validation"]["num_sources"] == 3 and remote["validation"]["bytes_read"] > 0
    for key in ("kind", "sources", "items", "identity", "columns" if kind == "arrow" else "fields"):
        assert remote[key] == here[key], key
    assert remote["kind"] == kind and remote["path"] == url
    code, out, err = run(capsys, "inspect", url, "--show", "3", "--json")
    _, out_local, _ = run(capsys, "inspect", local, "--show", "3", "--json")
    assert code == 0 and json.loads(out) | {"path": None} == json.loads(out_local) | {"path": None}, err
    assert len(json.loads(out)["samples"]) == 3


def test_validate_on_s3_names_a_missing_arrow_file_and_a_corrupt_zarr_chunk(s3_arrow, s3_zarr, capsys):
    bucket = s3_arrow[1][5:].split("/")[0]
    client = boto3.client("s3")
    client.delete_object(Bucket=bucket, Key="rows/data-00001-of-00003.arrow")
    code, _, err = run(capsys, "index", s3_arrow[1], "--validate")
    assert code == 1 and err.strip().splitlines() == [
        f"error: data-00001-of-00003.arrow: expected an Arrow file whose every batch reads, found no such object at "
        f"{client.meta.endpoint_url}; upload the save_to_disk folder to {s3_arrow[1]} again"]
    client.put_object(Bucket=bucket, Key="z/run1.zarr/labels/c/0", Body=b"not a chunk")
    client.delete_object(Bucket=bucket, Key="z/run2.zarr/images/c/3/0/0")
    code, _, err = run(capsys, "index", s3_zarr[1], "--validate")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 2, err
    assert lines[0].startswith("error: run1.zarr/labels/c/0: expected chunk c/0 decodes (items 0:3), found ")
    assert lines[1].startswith("error: run2.zarr/images/c/3/0/0: expected chunk c/3/0/0 (the array's shape and chunks call "
                               "for it), found no such file: its items would read as the fill value; upload it again")


def test_missing_prefix_on_s3_is_one_line(s3_bucket, capsys):
    code, _, err = run(capsys, "inspect", f"s3://{s3_bucket}/nothing-here", "--kind", "zarr")
    assert code == 1 and err.startswith(f"error: s3://{s3_bucket}/nothing-here: no zarr arrays at http://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1
