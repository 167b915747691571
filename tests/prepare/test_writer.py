"""ShardWriter: exact shard sizes, document starts per shard, and the cut positions a resume starts from (an exhaustive small grid)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sdl.loader.format.tokens import file_checksum
from sdl.prepare.writer import ShardWriter


@pytest.mark.parametrize("tokens_per_shard", [1, 2, 3, 5, 7, 100])
def test_shards_docs_and_cuts(tmp_path, tokens_per_shard):
    lengths = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64)
    stream = np.arange(lengths.sum(), dtype=np.uint16)
    out = tmp_path / str(tokens_per_shard)
    writer = ShardWriter(out, tokens_per_shard=tokens_per_shard, dtype="uint16")
    cuts = writer.add(stream[:9], lengths[:4]) + writer.add(stream[9:], lengths[4:])
    last = writer.finish()
    shards = [c.shard for c in cuts] + ([last] if last else [])
    assert [s.num_tokens for s in shards[:-1]] == [tokens_per_shard] * (len(shards) - 1)
    got = np.concatenate([np.load(out / s.file) for s in shards])
    assert np.array_equal(got, stream) and all(file_checksum(out / s.file) == s.checksum for s in shards)
    starts = np.concatenate([np.load(out / s.docs_file) + i * tokens_per_shard for i, s in enumerate(shards)])
    assert list(starts) == list(np.cumsum(lengths) - lengths)
    assert [s.num_docs for s in shards] == [len(np.load(out / s.docs_file)) for s in shards]
    ends = np.cumsum(lengths)
    for i, cut in enumerate(cuts):  # docs_done/carry are relative to the batch that was being added
        written = (i + 1) * tokens_per_shard
        first_doc = 0 if written <= 9 else 4
        done = int(np.searchsorted(ends, written, side="right"))
        assert cut.docs_done == done - first_doc
        assert cut.carry == (written - (ends[done] - lengths[done]) if done < len(lengths) else 0)


def test_skip_leaves_out_carried_tokens_and_their_start(tmp_path):
    writer = ShardWriter(tmp_path, tokens_per_shard=4, dtype="uint32")
    cuts = writer.add(np.arange(10, dtype=np.uint32), np.array([6, 4]), skip=3)
    last = writer.finish()
    assert cuts[0].docs_done == 1 and cuts[0].carry == 1
    assert np.array_equal(np.load(tmp_path / cuts[0].shard.file), [3, 4, 5, 6])
    assert list(np.load(tmp_path / cuts[0].shard.docs_file)) == [3]
    assert np.array_equal(np.load(tmp_path / last.file), [7, 8, 9])


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from sdl.loader.format.atomic import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644  # other users of a shared cluster can read the dataset


FULL_DISK = """
import errno, resource, sys
from pathlib import Path
import numpy as np
from sdl.prepare.writer import write_npy
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # a write past 4 KiB fails as on a full disk (EFBIG for ENOSPC)
try:
    write_npy(Path(sys.argv[1]) / "shard.npy", np.arange(10_000, dtype=np.uint16))
except OSError as exc:
    print(errno.errorcode.get(exc.errno), sorted(p.name for p in Path(sys.argv[1]).iterdir()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as on Linux")
def test_a_short_write_is_an_os_error_with_its_errno(tmp_path):
    """What a full disk raises names the cause (numpy's own write said only "N requested and M written"); nothing is left."""
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.stdout == "EFBIG []\n", done.stderr
