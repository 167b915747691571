"""Laws of a warm node cache on a real S3 server (moto): reading cached objects costs what reading a local folder costs.
A warm epoch from an unlimited cache reads no order in the prefetcher and sends no request; a cache hit waits for no
lock (another process downloading or evicting holds one); an object evicted under its opener is fetched again."""

from __future__ import annotations

import fcntl
import threading
from contextlib import ExitStack

import numpy as np
from sdl.loader import TokenWindows, make_loader
from sdl.loader.storage import Prefetcher


def epoch(ds: TokenWindows) -> list[np.ndarray]:
    return [batch["input_ids"].numpy().copy() for batch in make_loader(ds, 4, shuffle="locality", block_size=10,
                                                                        num_workers=0, rank=0, world_size=1, device="cpu")]


def test_a_warm_epoch_from_an_unlimited_cache_makes_no_prefetch_pass(s3_dataset, tmp_path, monkeypatch):
    local, url = s3_dataset(num_tokens=8 * 1_000, tokens_per_shard=1_000, vocab_size=5_000)
    cache = tmp_path / "cache"
    want = epoch(TokenWindows(local, seq_len=100))
    cold = TokenWindows(url, seq_len=100, cache_dir=cache)
    assert all(np.array_equal(a, b) for a, b in zip(epoch(cold), want, strict=True))
    assert cold.remote.cache.stats.misses == 8
    passes: list[int] = []
    real_pass = Prefetcher._pass
    monkeypatch.setattr(Prefetcher, "_pass", lambda self, consumed: passes.append(consumed) or real_pass(self, consumed))
    warm = TokenWindows(url, seq_len=100, cache_dir=cache)  # a restarted job on the same node
    assert all(np.array_equal(a, b) for a, b in zip(epoch(warm), want, strict=True))
    assert passes == []  # the cache held every shard: the thread read no order (it made 1+ passes here before)
    assert (warm.remote.cache.stats.hits, warm.remote.cache.stats.misses) == (8, 0)
    (cache / next(iter(cold._entries.values())).name).unlink()  # one shard gone: the prefetcher works again
    again = TokenWindows(url, seq_len=100, cache_dir=cache)
    assert all(np.array_equal(a, b) for a, b in zip(epoch(again), want, strict=True))
    assert passes and again.remote.cache.stats.misses == 1


def test_a_cache_hit_waits_for_no_lock(s3_dataset, tmp_path):
    """Every object's lock held, as by processes downloading or evicting: the cached objects still open at once."""
    local, url = s3_dataset(num_tokens=6 * 1_000, tokens_per_shard=1_000, vocab_size=5_000)
    ds, here = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache"), TokenWindows(local, seq_len=100)
    for source_id in range(6):
        ds.remote.cache.prefetch(ds.cache_entry(source_id), next_use=1.0)
    reader = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache")
    got: list[np.ndarray] = []
    with ExitStack() as held:
        for source_id in range(6):
            held.enter_context(ds.remote.cache._entry_lock(ds.cache_entry(source_id).name, fcntl.LOCK_EX))
        thread = threading.Thread(target=lambda: got.append(reader.__getitems__(list(range(len(reader))))["input_ids"].numpy()),
                                  daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "a cache hit waited for another process's lock"  # the old shared lock did
    assert np.array_equal(got[0], here.__getitems__(list(range(len(here))))["input_ids"].numpy())
    assert (reader.remote.cache.stats.hits, reader.remote.cache.stats.misses) == (6, 0)


def test_an_object_evicted_under_its_opener_is_fetched_again(s3_dataset, tmp_path):
    local, url = s3_dataset(num_tokens=3 * 1_000, tokens_per_shard=1_000, vocab_size=5_000)
    ds = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache")
    cache, entry = ds.remote.cache, ds.cache_entry(1)
    cache.prefetch(entry, next_use=1.0)
    calls = []

    def opener(path):
        calls.append(path)
        if len(calls) == 1:
            path.unlink()  # another process evicts it between the opener's header read and its map
        return np.load(path)

    tokens = cache.open(entry, opener)
    assert np.array_equal(tokens, np.load(local / "shard-000001.npy")) and len(calls) == 2
    assert (cache.stats.hits, cache.stats.misses) == (0, 2) and (tmp_path / "cache" / entry.name).exists()
