"""Two processes (two ranks of one job) on one node share one cache folder: each reads exactly its slice, correct
bytes, and no object is downloaded twice — the per-object file lock makes the second reader wait for the first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("cache_worker.py")


@pytest.mark.slow
def test_two_processes_share_one_cache_and_download_each_shard_once(s3_dataset, tmp_path):
    local, url = s3_dataset(num_tokens=12_000, tokens_per_shard=500, vocab_size=5_000)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, str(WORKER), url, str(local), str(cache), str(rank), "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    ids = results[0]["ids"] + results[1]["ids"]
    assert len(ids) == len(set(ids)) == 112 and set(ids) <= set(range(119))  # exactly once over both ranks; 7 dropped
    assert results[0]["misses"] + results[1]["misses"] == 24  # every shard downloaded once on the node, by one of them
    cached = sorted(p.name.split(".")[0] for p in cache.rglob("shard-*.npy"))
    assert cached == [f"shard-{i:06d}" for i in range(24)]
