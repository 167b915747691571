"""What the machine refuses (file-size limit, full disk, permissions, descriptors) is one `error:` line naming the
file and what to do, exit 1, no partial file: never a traceback."""

import json
import os
import shutil
import subprocess
import sys

import pytest

LIMITED = "import resource, sys\nresource.setrlimit(resource.RLIMIT_FSIZE, ({0}, {0}))\nfrom sdl.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"


def sdl_with_file_limit(limit_bytes, *args, cwd):
    return subprocess.run([sys.executable, "-c", LIMITED.format(limit_bytes), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_a_write_past_the_file_size_limit_is_one_line(tmp_path):
    done = sdl_with_file_limit(100_000, "bench", "--steps", 2, cwd=tmp_path)  # its synthetic dataset: 16 MB shards
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("error: file too large for this process's limit; raise the limit (ulimit -f)")


def test_a_checkpoint_that_cannot_be_written_whole_is_one_line_and_nothing_is_left(tmp_path, token_dataset):
    import torch
    from sdl.loader import TokenWindows, make_loader

    loader = make_loader(TokenWindows(token_dataset(num_tokens=4_000, tokens_per_shard=1_000), seq_len=8), 4, num_workers=0,
                         device="cpu")
    next(iter(loader))
    torch.save({"model": torch.zeros(50_000), "loader": loader.state_dict()}, tmp_path / "big.pt")
    done = sdl_with_file_limit(50_000, "reshard-ckpt", "big.pt", "--world-size", 2, "--out", "new.pt", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("error: cannot write new.pt: torch.save failed") and "ulimit -f" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["big.pt"]  # no new.pt, no temporary


def _unprivileged():
    """A command prefix that runs without root's power to read any file: none when not root; `setpriv` dropping the
    two capabilities when root (None when setpriv is missing)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    caps = "-dac_override,-dac_read_search"
    return None if setpriv is None else [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


@pytest.mark.parametrize("what", ["manifest", "shard", "state"])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, token_dataset, what):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: every file is readable")
    path = token_dataset(num_tokens=4_000, tokens_per_shard=1_000)
    if what == "state":
        from sdl.loader import TokenWindows, make_loader

        (tmp_path / "state.json").write_text(json.dumps(make_loader(TokenWindows(path, seq_len=8), 4, num_workers=0,
                                                                    device="cpu").state_dict()))
        target, args = tmp_path / "state.json", ["reshard-ckpt", tmp_path / "state.json"]
    else:
        target = path / ("manifest.json" if what == "manifest" else "shard-000001.npy")
        args = ["index", path]
    target.chmod(0)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "sdl.cli.main", *map(str, args)], capture_output=True,
                              text=True, timeout=300)
    finally:
        target.chmod(0o644)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert str(target) in done.stderr and "permission denied" in done.stderr and "readable" in done.stderr


def test_an_index_cache_that_cannot_be_written_is_warned_about_and_the_index_still_serves(tmp_path, token_dataset):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: every folder is writable")
    path = token_dataset(num_tokens=4_000, tokens_per_shard=1_000)
    shutil.rmtree(path / ".sdl", ignore_errors=True)
    path.chmod(0o555)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "sdl.cli.main", "index", str(path), "--json"], capture_output=True,
                              text=True, timeout=300)
    finally:
        path.chmod(0o755)
    assert done.returncode == 0 and json.loads(done.stdout)["cache"] is None and json.loads(done.stdout)["tokens"] == 4_000
    assert done.stderr.startswith(f"warning: could not write the index cache {path / '.sdl' / 'index.json'}")
    assert done.stderr.count("\n") == 1


READ_LAST = ("import sys\nfrom sdl.loader import TokenWindows\nds = TokenWindows(sys.argv[1], seq_len=8)\n"
             "print(len(ds), int(ds[len(ds) - 1]['input_ids'][-1]))\n")  # the last window, 498: tokens 3984..3991


def test_a_stale_cache_in_a_folder_that_cannot_be_written_is_rebuilt_in_memory_with_a_warning(token_dataset):
    """Readers once stopped with `run sdl index`, which could not replace the cache there: no way out but a copy."""
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: every folder is writable")
    path = token_dataset(num_tokens=4_000, tokens_per_shard=1_000)
    assert subprocess.run([sys.executable, "-m", "sdl.cli.main", "index", str(path)], capture_output=True).returncode == 0
    os.utime(path / "shard-000002.npy", ns=(1, 1))  # a restore, a copy with other times: the cache no longer matches
    for folder in (path / ".sdl", path):
        folder.chmod(0o555)
    try:
        read = [subprocess.run([*prefix, sys.executable, "-c", READ_LAST, str(path)], capture_output=True, text=True, timeout=300)
                for _ in range(2)]
        index = subprocess.run([*prefix, sys.executable, "-m", "sdl.cli.main", "index", str(path), "--json"],
                               capture_output=True, text=True, timeout=300)
    finally:
        for folder in (path, path / ".sdl"):
            folder.chmod(0o755)
    for done in read:
        assert done.returncode == 0 and done.stdout == "499 3991\n", done.stderr[-2000:]
        assert (f"UserWarning: {path}: the cached index no longer matches the files (shard-000002.npy was resized or "
                f"rewritten), and {path / '.sdl'} cannot be written (a read-only folder), so the index is rebuilt from the files "
                f"at every open of the dataset: to open it from its cache again, make the folder writable and run "
                f"`sdl index {path}`") in done.stderr
    assert index.returncode == 0 and json.loads(index.stdout)["cache"] is None  # and it says so: every open rebuilds
    assert "every open of the dataset rebuilds the index from its files" in index.stderr
