"""Shared fixtures: self-describing synthetic data (token at global position p is p % vocab)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def token_dataset(tmp_path):
    """Factory: a self-describing token dataset (token at global position p is p % vocab_size)."""
    from sdl.prepare.synthetic import write_synthetic_dataset

    def make(num_tokens=10_000, tokens_per_shard=1_000, vocab_size=50257, dtype=None, name="tokens"):
        path = tmp_path / name
        write_synthetic_dataset(path, num_tokens=num_tokens, tokens_per_shard=tokens_per_shard,
                                vocab_size=vocab_size, dtype=dtype, doc_len=97)
        return path

    return make


# A real S3-compatible server (moto's server mode) on 127.0.0.1, reached through the standard AWS
# environment variables only, as a user would point sdl at MinIO.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def start_s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def stop_s3_server(server) -> None:
    server.stop()
    server._server.server_close()  # refuse connections from now on, as a server that went down does


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL of a moto S3 server for the session; AWS_* variables point every client (and subprocess) at it."""
    pytest.importorskip("moto.server")
    server, endpoint = start_s3_server()
    saved = {key: os.environ.get(key) for key in [*S3_ENV, "AWS_ENDPOINT_URL", "AWS_PROFILE"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    os.environ.pop("AWS_PROFILE", None)
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    stop_s3_server(server)


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the session's S3 server (named after the test); its name."""
    import re

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{os.getpid() % 10000}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def upload_folder(folder, bucket: str, prefix: str, checksums: bool = True) -> str:
    """Copy a local dataset folder into s3://bucket/prefix, key for file; its URL. Each object carries its sha256 as
    `sdl prepare` uploads them (`x-amz-meta-sha256`), or nothing (`checksums=False`, as `aws s3 sync` copies them)."""
    import hashlib
    from pathlib import Path

    import boto3

    client = boto3.client("s3")
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and ".sdl" not in path.parts:
            extra = {"Metadata": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}} if checksums else None
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}", ExtraArgs=extra)
    return f"s3://{bucket}/{prefix}"


@pytest.fixture
def s3_dataset(token_dataset, s3_bucket):
    """Factory: a self-describing token dataset written locally and uploaded; (local path, s3 URL)."""

    def make(checksums=True, **kwargs):
        local = token_dataset(**kwargs)
        return local, upload_folder(local, s3_bucket, kwargs.get("name", "tokens"), checksums)

    return make


def save_arrow(folder, num_rows=60, num_shards=3):
    """A save_to_disk folder of `num_rows` self-describing rows (n = i, text = f"row {i}", score = i / 2) in `num_shards` files."""
    import datasets

    ds = datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(num_rows)], "n": list(range(num_rows)),
                                     "score": [i / 2 for i in range(num_rows)]})
    ds.save_to_disk(str(folder), num_shards=num_shards)
    return folder


def write_zarr(root, lengths=(5, 3, 7)):
    """Zarr groups run0.zarr, run1.zarr, … of `lengths` items: labels[i] = i (global), images[i] = i + arange(6) as [2, 3]."""
    import numpy as np
    import zarr

    start = 0
    for i, n in enumerate(lengths):
        group = zarr.open_group(str(root / f"run{i}.zarr"), mode="w")
        images = group.create_array("images", shape=(n, 2, 3), chunks=(2, 2, 3), dtype="float32")
        images[:] = np.arange(start, start + n, dtype="float32")[:, None, None] + np.arange(6, dtype="float32").reshape(2, 3)
        labels = group.create_array("labels", shape=(n,), chunks=(4,), dtype="int64")
        labels[:] = np.arange(start, start + n)
        start += n
    return root


@pytest.fixture
def s3_arrow(tmp_path, s3_bucket):
    """An Arrow save_to_disk folder (60 rows, 3 files) written locally and uploaded: (local path, s3 URL)."""
    local = save_arrow(tmp_path / "saved")
    return local, upload_folder(local, s3_bucket, "rows")


@pytest.fixture
def s3_zarr(tmp_path, s3_bucket):
    """Three zarr groups (15 items) written locally and uploaded: (local path, s3 URL)."""
    local = write_zarr(tmp_path / "z")
    return local, upload_folder(local, s3_bucket, "z")


@pytest.fixture
def s3_upload():
    """The function that copies a local folder into s3://bucket/prefix."""
    return upload_folder


@pytest.fixture
def own_s3_server(s3_server, monkeypatch):
    """A second S3 server for this test alone (to be stopped by it): (endpoint, stop); AWS_ENDPOINT_URL points at it."""
    server, endpoint = start_s3_server()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    stopped = []

    def stop() -> None:
        if not stopped:
            stopped.append(True)
            stop_s3_server(server)

    yield endpoint, stop
    stop()
