"""Opening a dataset with no file descriptor left, and a file changed under a running loader: what gives back
descriptors, and the one line each case says."""

import os
import subprocess
import sys
import textwrap

import pytest

OPENING = """
import os, resource, sys
from sdl.loader import TokenWindows
from sdl.loader.index.handles import OutOfDescriptors
first = TokenWindows(sys.argv[1], seq_len=16)
first.__getitems__(list(range(0, len(first), 7)))  # every shard of the first dataset mapped: its LRU holds them
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
others = []
try:
    while True:
        others.append(os.open("/dev/null", os.O_RDONLY))  # no descriptor left but the first dataset's
except OSError:
    pass
second = TokenWindows(sys.argv[2], seq_len=16)  # indexing it finds none: the first's LRU gives half back
print(len(second) > 0, len(first._open) < 20)
first._open.items.clear()  # nothing held by sdl any more: nothing to give back
del second
while True:
    try:
        others.append(os.open("/dev/null", os.O_RDONLY))  # and every descriptor that freed taken too
    except OSError:
        break
try:
    TokenWindows(sys.argv[3], seq_len=16)
except OutOfDescriptors as exc:
    print("refused", str(exc).replace(sys.argv[3], "DS"))
"""


def test_indexing_with_no_descriptor_left_frees_what_datasets_hold_else_says_what_to_do(tmp_path):
    """Opening a dataset (its index: the manifest and each shard's header, one at a time) out of descriptors first has
    every LRU of the process give back its older half; with nothing to give back, one line says what to do (was the raw
    OSError "Too many open files")."""
    from sdl.prepare.synthetic import write_synthetic_dataset

    for name in ("a", "b", "c"):
        write_synthetic_dataset(tmp_path / name, num_tokens=20 * 40, tokens_per_shard=40, vocab_size=1000)
    folders = [str(tmp_path / name) for name in ("a", "b", "c")]
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(OPENING), *folders], capture_output=True, text=True, timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[0] == "True True", done.stderr[-2000:]
    assert lines[1] == ("refused out of file descriptors indexing DS (its files are read one at a time; this process may "
                        "open 64): close datasets or files this process holds, or raise the limit (ulimit -n)"), lines


def test_the_cli_says_out_of_descriptors_in_one_line(tmp_path):
    script = ("import os, resource, sys\nresource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\nfrom sdl.cli.main import main\n"
              "fds = []\n"
              "while True:\n    try:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n    except OSError:\n        break\n"
              "sys.exit(main(['index', sys.argv[1]]))\n")
    from sdl.prepare.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "ds", num_tokens=800, tokens_per_shard=40, vocab_size=1000)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ds")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr[-2000:]
    assert done.stderr.startswith("error: out of file descriptors") and "ulimit -n" in done.stderr


@pytest.mark.parametrize("kind, damage, says", [
    ("tokens", "truncate", r"is now 64 bytes.*\(truncated or rewritten\); restore it \(re-run sdl prepare"),
    ("tokens", "delete", r"is gone.*\(deleted\); restore it \(re-run sdl prepare"),
    ("arrow", "truncate", r"is now 64 bytes.*\(truncated or rewritten\); restore it \(rewrite it as it was, e\.g\. with save_to_disk"),
    ("tokens", "rewrite", r"was modified at .*, the index recorded a file of the same size modified at .*\(rewritten\); restore it"),
    ("arrow", "rewrite", r"was modified at .*, the index recorded a file of the same size modified at .*\(rewritten\); restore it"),
])
def test_a_file_changed_under_the_loader_is_named_with_the_fix_for_its_kind(tmp_path, kind, damage, says):
    from sdl.loader import ArrowRows, TokenWindows
    from sdl.loader.errors import FormatError
    from sdl.loader.index.handles import check_files

    if kind == "tokens":
        from sdl.prepare.synthetic import write_synthetic_dataset

        write_synthetic_dataset(tmp_path / "ds", num_tokens=400, tokens_per_shard=100, vocab_size=1000)
        dataset = TokenWindows(tmp_path / "ds", seq_len=8)
    else:
        import datasets

        datasets.Dataset.from_dict({"n": list(range(400))}).save_to_disk(str(tmp_path / "ds"), num_shards=2)
        dataset = ArrowRows(tmp_path / "ds")
    path = dataset.index.path_of(1)
    if damage == "delete":
        os.remove(path)
    elif damage == "rewrite":
        rewrite_in_place(path)
    else:
        with open(path, "r+b") as handle:
            handle.truncate(64)
    with pytest.raises(FormatError, match=says):
        check_files(dataset.index, range(len(dataset.index.sources)))


def rewrite_in_place(path):
    """Other bytes at the same size, a second later by the mtime (a clock of coarse resolution still sees it)."""
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(255 - b for b in data[-8:])
    mtime_ns = os.stat(path).st_mtime_ns
    path.write_bytes(bytes(data))
    os.utime(path, ns=(mtime_ns + 10**9, mtime_ns + 10**9))


@pytest.mark.parametrize("opened", [False, True])
def test_a_shard_rewritten_at_the_same_size_is_never_served(token_dataset, monkeypatch, opened):
    """Rewritten after the dataset was made, before or after its first read: an error naming it, on open or at the next
    check (was: the new tokens served, the size being the same)."""
    from sdl.loader import TokenWindows
    from sdl.loader.errors import FormatError
    from sdl.loader.index import handles

    monkeypatch.setattr(handles, "REFRESH_S", 0.0)
    monkeypatch.setattr(handles, "REFRESH_CALLS", 1)
    dataset = TokenWindows(token_dataset(num_tokens=4_000, tokens_per_shard=1_000), seq_len=8)
    if opened:
        assert dataset[125]["input_ids"].tolist() == list(range(1000, 1008))  # shard 1 mapped
    rewrite_in_place(dataset.index.path_of(1))
    with pytest.raises(FormatError, match=r"shard-000001\.npy was modified at .*restore it \(re-run sdl prepare"):
        dataset[125]


@pytest.mark.parametrize("cached", [False, True])
def test_shards_swapped_with_their_mtimes_put_back_under_a_running_loader_are_named(token_dataset, cached):
    """Same sizes, same mtimes (os.utime): only the inode tells the files apart, as found when the index was built or
    its cache checked (was: the other shard's tokens served)."""
    from sdl.loader import TokenWindows
    from sdl.loader.errors import FormatError

    path = token_dataset(num_tokens=4_000, tokens_per_shard=1_000)
    dataset = TokenWindows(path, seq_len=8)  # builds the index, writes its cache
    if cached:
        dataset = TokenWindows(path, seq_len=8)
    a, b = dataset.index.path_of(0), dataset.index.path_of(1)
    stats = os.stat(a), os.stat(b)
    os.rename(a, path / "moved"), os.rename(b, a), os.rename(path / "moved", b)
    for target, stat in zip((a, b), stats):
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(FormatError, match=rf"shard-000000\.npy is now inode {stats[1].st_ino}, it was inode {stats[0].st_ino} "
                                          r"when the dataset was opened \(same size and mtime\).*\(replaced\)"):
        dataset[0]


def test_files_on_a_fuse_mount_are_compared_by_size_and_mtime_only(tmp_path):
    """gcsfuse, s3fs and other FUSE mounts may number a file afresh each time it is looked up: its inode is not compared
    there (a valid file reopened by the LRU would be refused as replaced); elsewhere it is, the longest mount point wins."""
    from sdl.loader.index.handles import stable_inodes

    table = tmp_path / "mounts"
    table.write_text("/dev/root / ext4 rw 0 0\ngcsfuse /mnt/bucket fuse.gcsfuse rw 0 0\ns3fs /mnt/s3 fuse.s3fs rw 0 0\n"
                     "/dev/sdb /mnt/bucket/local xfs rw 0 0\n")
    assert stable_inodes("/home/data", str(table)) and stable_inodes("/mnt/bucketx/d", str(table))
    assert not stable_inodes("/mnt/bucket/corpus", str(table)) and not stable_inodes("/mnt/s3", str(table))
    assert stable_inodes("/mnt/bucket/local/corpus", str(table))
    assert stable_inodes("/anything", str(tmp_path / "no-such-table"))
