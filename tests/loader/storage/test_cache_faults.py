"""Laws of the node cache when this machine's side fails, on a real S3 server (moto). A cache folder that cannot be
created or written (a file in the way, a read-only or full file system, a file-size limit) is one InputError naming the
folder, raised at once: never retried as the store not answering."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import ExitStack, contextmanager

import pytest
from sdl.loader import TokenWindows
from sdl.loader.errors import InputError


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
