"""Laws of the node cache when this machine's side fails, on a real S3 server (moto). A cached object found damaged is
fetched again and reads right; a copy just fetched that does not open is one FormatError naming the object's s3:// URL,
never its cache path. A cache folder that cannot be created or written (a file in the way, a read-only or full file
system, a file-size limit) is one InputError naming the folder, raised at once: never retried as the store not answering."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack, contextmanager

import boto3
import numpy as np
import pytest
from sdl.loader import TokenWindows
from sdl.loader.data.arrow_rows import ArrowRows
from sdl.loader.errors import FormatError, InputError

DAMAGED_IN_STORE = "the object in the store is damaged: upload a good copy of it again"


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # the default cache; the rows of remote Arrow files


@contextmanager
def tiny_tmpfs(folder, size_kb: int, read_only: bool = False):
    """A tmpfs of `size_kb` KiB mounted at `folder` while the block runs; the test skips where none can be mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[:120]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def read_all(remote: TokenWindows, local: TokenWindows) -> None:
    for i in range(len(local)):
        assert np.array_equal(remote[i]["input_ids"].numpy(), local[i]["input_ids"].numpy()), i


@pytest.mark.parametrize("damage", ["cut short", "header overwritten"])
def test_a_damaged_cached_shard_is_fetched_again_and_reads_right(s3_dataset, tmp_path, damage):
    local, url = s3_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=5_000)
    cache, here = tmp_path / "cache", TokenWindows(local, seq_len=100)
    read_all(TokenWindows(url, seq_len=100, cache_dir=cache), here)
    (cached,) = cache.rglob("shard-000001.*.npy")
    good = cached.read_bytes()
    cached.write_bytes(good[:1000] if damage == "cut short" else b"\0" * 16 + good[16:])
    again = TokenWindows(url, seq_len=100, cache_dir=cache)  # before: every run failed on it, advising `sdl prepare --repair`
    read_all(again, here)
    assert cached.read_bytes() == good and again.remote.cache.stats.misses == 1


def test_a_shard_that_does_not_open_when_just_fetched_is_named_by_its_url(s3_dataset, s3_server, tmp_path):
    local, url = s3_dataset(num_tokens=2_000, tokens_per_shard=1_000, vocab_size=5_000)
    bucket = url[len("s3://"):].split("/")[0]
    cut = (local / "shard-000001.npy").read_bytes()[:1000]
    manifest = json.loads((local / "manifest.json").read_text())
    manifest["shards"][1]["checksum"] = "sha256:" + hashlib.sha256(cut).hexdigest()  # a manifest that vouches for it
    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key="tokens/shard-000001.npy", Body=cut)
    client.put_object(Bucket=bucket, Key="tokens/manifest.json", Body=json.dumps(manifest).encode())
    ds = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache")
    with pytest.raises(FormatError) as caught:
        ds[15]
    assert str(caught.value) == (f"{url}/shard-000001.npy is 1,000 bytes, its header needs 2,128: the file was truncated, in "
                                 f"a copy just fetched from {s3_server}; {DAMAGED_IN_STORE}")
    assert not list((tmp_path / "cache").rglob("shard-000001*"))  # no damaged copy, no part file left behind


def test_an_arrow_file_damaged_in_the_store_is_named_by_its_url(s3_arrow, s3_server, tmp_path):
    local, url = s3_arrow
    raw = (local / "data-00000-of-00003.arrow").read_bytes()
    boto3.client("s3").put_object(Bucket=url[len("s3://"):].split("/")[0], Key="rows/data-00000-of-00003.arrow",
                                  Body=raw[: len(raw) // 2])
    with pytest.raises(FormatError) as caught:
        ArrowRows(url, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith(f"{url}/data-00000-of-00003.arrow: truncated Arrow file: {len(raw) // 2:,} bytes ending in ")
    assert message.endswith(f", in a copy just fetched from {s3_server}; {DAMAGED_IN_STORE}") and str(tmp_path) not in message


@pytest.mark.parametrize("how", ["a file in the way", "read-only"])
def test_a_cache_folder_that_cannot_be_created_is_one_input_error_naming_it(s3_dataset, tmp_path, how):
    _, url = s3_dataset(num_tokens=2_000, tokens_per_shard=1_000, vocab_size=5_000)
    with ExitStack() as stack:
        if how == "read-only":
            folder = stack.enter_context(tiny_tmpfs(tmp_path / "ro", 64, read_only=True))
            cache, found = folder / "cache", "EROFS: Read-only file system"
        else:
            (tmp_path / "afile").write_text("x")
            cache, found = tmp_path / "afile" / "cache", "ENOTDIR: Not a directory"
        with pytest.raises(InputError) as caught:
            TokenWindows(url, seq_len=100, cache_dir=cache)
    assert str(caught.value) == f"cache_dir {cache}: cannot create or write it ({found}); pass a writable cache_dir or set XDG_CACHE_HOME"


def test_a_full_cache_disk_is_one_input_error_naming_the_folder_not_the_store(s3_dataset, tmp_path):
    _, url = s3_dataset(num_tokens=100_000, tokens_per_shard=10_000, vocab_size=5_000)  # shards of 20,128 bytes
    with tiny_tmpfs(tmp_path / "small", 40) as small:  # room for one shard and a part of the next
        ds = TokenWindows(url, seq_len=100, cache_dir=small / "cache", storage_timeout_s=5)
        gets = []
        ds.remote.client.client.meta.events.register("before-call.s3.GetObject", lambda **_: gets.append(1))
        with pytest.raises(InputError) as caught:
            for i in range(0, len(ds), 100):
                ds[i]
        parts = [p.name for p in (small / "cache").rglob("*.part-*")]
        del ds
    assert str(caught.value).endswith(f": cache_dir {small / 'cache'}: cannot create or write it (ENOSPC: No space left on "
                                      "device); free space there, set a cache_limit that fits in it, or pass another "
                                      "cache_dir (or set XDG_CACHE_HOME)")
    assert str(caught.value).startswith(f"{url}/shard-00000") and len(gets) == i // 100 + 1  # one GET each: no retry
    assert parts == []


FILE_LIMIT = """import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
from sdl.loader import TokenWindows
from sdl.loader.errors import SdlError
try:
    TokenWindows(sys.argv[1], seq_len=100, cache_dir=sys.argv[2])[0]
except SdlError as exc:
    print(type(exc).__name__, exc)
"""


def test_a_cache_file_past_the_file_size_limit_is_one_input_error_naming_the_folder(s3_dataset, tmp_path):
    _, url = s3_dataset(num_tokens=40_000, tokens_per_shard=20_000, vocab_size=5_000, name="big")  # 40,128 bytes
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", FILE_LIMIT, url, str(cache)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == (
        f"InputError {url}/shard-000000.npy: cache_dir {cache}: cannot create or write it (EFBIG: File too large); free space "
        "there, set a cache_limit that fits in it, or pass another cache_dir (or set XDG_CACHE_HOME)\n"), done.stderr[-2000:]
