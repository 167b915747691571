"""sdl reshard-ckpt writes its output whole, where it may, in the format its name says, keeping mode, owner and links."""

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sdl.loader import TokenWindows, make_loader
from sdl.loader.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reshard_runs import SEED, run, saved  # noqa: E402


@pytest.fixture
def windows(token_dataset):
    return TokenWindows(token_dataset(num_tokens=5000, tokens_per_shard=1000), seq_len=16)  # 312 samples


def test_an_existing_output_is_refused_unless_overwrite(capsys, tmp_path, windows):
    saved(tmp_path, windows)
    (tmp_path / "new.pt").write_bytes(b"keep")
    rc, _, err = run(capsys, tmp_path / "rank_0.pt", "--world-size", 2, "--out", tmp_path / "new.pt")
    assert rc == 1 and "new.pt already exists" in err and (tmp_path / "new.pt").read_bytes() == b"keep"
    rc, _, _ = run(capsys, tmp_path / "rank_0.pt", "--world-size", 2, "--out", tmp_path / "new.pt", "--overwrite")
    assert rc == 0 and load_checkpoint(tmp_path / "new.pt")["loader"]["world_size"] == 2


def _read_only_folder(folder):
    """A folder this process cannot write into, even as root (chattr +i); None where neither way works."""
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    (folder / "probe").unlink()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return folder
    return None


def test_a_read_only_out_folder_is_one_line(capsys, tmp_path, windows):
    inputs = saved(tmp_path, windows)
    folder = _read_only_folder(tmp_path / "ro")
    if folder is None:
        pytest.skip("no way to make a folder read-only for this process here")
    try:
        rc, _, err = run(capsys, *inputs, "--world-size", 2, "--out", folder / "new.pt")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)
    assert rc == 1 and err.startswith(f"error: cannot write {folder / 'new.pt'}: ") and err.count("\n") == 1, err
    assert "choose a writable --out" in err and not list(folder.iterdir())


def test_out_json_from_a_pt_writes_json(capsys, tmp_path, windows):
    torch.save({"loader": make_loader(windows, 4, seed=SEED, num_workers=0).state_dict(), "step": 3}, tmp_path / "rank_0.pt")
    rc, _, err = run(capsys, tmp_path / "rank_0.pt", "--world-size", 2, "--out", tmp_path / "new.json")
    assert rc == 0, err
    content = json.loads((tmp_path / "new.json").read_text())  # was a pickle behind a .json name
    assert content["step"] == 3 and content["loader"]["world_size"] == 2


WRITER = """
import os, signal, sys
from sdl.loader.format.atomic import atomic_write
def write(handle):
    handle.write(b"x" * 4096)
    handle.flush()
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    print("writing", flush=True)
    sys.stdin.read()  # a live writer: holds its temporary file until told to finish
atomic_write(sys.argv[1], write)
"""


def test_in_place_removes_killed_writers_temporaries_but_not_a_live_writers(capsys, tmp_path, windows):
    [ckpt] = saved(tmp_path, windows)
    killed = subprocess.run([sys.executable, "-c", WRITER, str(ckpt), "kill"])
    assert killed.returncode == -signal.SIGKILL
    live = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "other.pt"), "live"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline() == "writing\n"
        [stale] = tmp_path.glob(".rank_0.pt.tmp-*")
        foreign = [tmp_path / ".rank_0.pt.tmp-unnamed", tmp_path / ".notes.txt.tmp-123@host-x"]  # no writer to check
        for path in foreign:
            path.write_bytes(b"not sdl's")
        rc, _, err = run(capsys, ckpt, "--world-size", 2, "--in-place")
        assert rc == 0, err
        assert not stale.exists() and all(path.exists() for path in foreign)
        assert len(list(tmp_path.glob(".other.pt.tmp-*"))) == 1  # a live writer's file is left alone
        for path in foreign:
            path.unlink()
    finally:
        live.communicate("")
    assert live.returncode == 0 and (tmp_path / "other.pt").stat().st_size == 4096 and not list(tmp_path.glob(".*.tmp-*"))


def test_in_place_keeps_mode_and_owner_and_rewrites_a_symlinks_target(capsys, tmp_path, windows):
    [ckpt] = saved(tmp_path, windows)
    ckpt.chmod(0o600)
    owner = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(ckpt, *owner)
    link = tmp_path / "latest.pt"
    link.symlink_to(ckpt.name)
    rc, _, err = run(capsys, link, "--world-size", 2, "--in-place")
    assert rc == 0, err
    assert link.is_symlink() and os.readlink(link) == ckpt.name  # the link still points at the file
    info = ckpt.stat()
    assert load_checkpoint(ckpt)["loader"]["world_size"] == 2
    assert stat.S_IMODE(info.st_mode) == 0o600 and (info.st_uid, info.st_gid) == owner
