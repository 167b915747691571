"""Laws of the order-aware prefetcher on a real S3 server (moto): it fetches exactly the objects of the next
`depth` steps and the heads their windows spill into, so the loop then reads those steps without a request to
the store; over a cached epoch it looks at the order a chunk of steps at a time, not once per step; several
prefetchers downloading at once keep the cache within its limit."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sdl.loader import TokenWindows
from sdl.loader.sampling.sampler import ElasticSampler
from sdl.loader.storage import CacheEntry, Prefetcher, tree_bytes
from sdl.loader.storage import prefetch as prefetch_module
from sdl.loader.storage.prefetch import NamedObjects


def requests_by_thread(ds: TokenWindows) -> list[tuple[str, str]]:
    """(thread name, operation) of every request the dataset's client sends (a listener on the real client)."""
    seen: list[tuple[str, str]] = []
    ds.remote.client.client.meta.events.register(
        "before-call.s3", lambda model, **_: seen.append((threading.current_thread().name, model.name)))
    return seen


def start(ds: TokenWindows, sampler: ElasticSampler, depth: int, heads: bool = True) -> Prefetcher:
    needs = map(ds.needs_of, sampler.id_chunks())
    return Prefetcher(ds.remote.cache, needs, ds.cache_entry, depth, fetch_head=ds.fetch_head if heads else None).start()


def wait_ready(prefetcher: Prefetcher, through: int) -> None:
    deadline = time.monotonic() + 60
    while prefetcher.ready_through < through:
        assert prefetcher.error is None and time.monotonic() < deadline, prefetcher.error
        time.sleep(0.01)


def test_needs_of_names_the_start_shard_and_the_shard_a_window_spills_into(token_dataset):
    local = token_dataset(num_tokens=5_000, tokens_per_shard=700, vocab_size=1_000)
    ds = TokenWindows(local, seq_len=64, stride=50, shift="random", split="train", split_rate=0.8)
    ids = np.arange(len(ds))
    objects, heads = ds.needs_of(ids.reshape(-1, 1))
    offsets = ds.index.offsets
    for sample_id, obj, head in zip(ids.tolist(), objects.reshape(-1).tolist(), heads.reshape(-1).tolist()):
        start = (sample_id + ds._windows.start) * ds.stride
        shard = int(np.searchsorted(offsets, start, side="right")) - 1
        crosses = start + 64 + max(ds.shift_choices) > offsets[shard + 1] and shard + 1 < len(offsets) - 1
        assert (obj, head) == (shard, shard + 1 if crosses else -1)


def test_named_objects_give_each_entry_one_id_for_the_prefetchers_arrays():
    """ArrowRows and ZarrSamples name a batch's objects as cache entries: each entry gets one id, -1 pads a step."""
    entries = [CacheEntry(bucket="b", key=f"k{i}", name=f"n{i}", checksum=None, max_bytes=1) for i in range(4)]
    named = NamedObjects(lambda ids: [entries[i % 4] for i in dict.fromkeys(ids)])
    objects, heads = named.needs_of(np.array([[0, 1], [1, 1], [6, 3]]))
    assert objects.tolist() == [[0, 1], [1, -1], [2, 3]] and heads.shape == (3, 0)
    assert [named.entry_of(i) for i in range(4)] == entries


def test_the_lookahead_and_its_heads_are_fetched_so_the_loop_reads_without_a_request(s3_dataset, tmp_path):
    local, url = s3_dataset(num_tokens=20 * 1_000, tokens_per_shard=1_000, vocab_size=5_000)
    ds, here = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache"), TokenWindows(local, seq_len=100)
    sampler = ElasticSampler.for_dataset(ds, 4, shuffle=True, seed=1)  # every window of 101 tokens at a shard's end spills
    assert (ds.max_open_shards, here.max_open_shards) == (64, 20)  # every local shard; cached objects' maps pin evicted files
    seen = requests_by_thread(ds)
    batches = [list(batch) for batch in sampler]
    prefetcher = start(ds, sampler, depth=6)
    try:
        for done in (0, 6, 9):
            prefetcher.advance(done - prefetcher.consumed)
            wait_ready(prefetcher, done + 6)
            ahead = np.array(batches[done:done + 6])
            objects, heads = ds.needs_of(ahead)
            cached = {p.name.split(".")[0] for p in (tmp_path / "cache").rglob("shard-*.npy")}
            assert {f"shard-{i:06d}" for i in objects.reshape(-1).tolist()} <= cached
            spilled = set(heads[heads >= 0].tolist()) - {int(p[6:]) for p in cached}
            assert spilled <= set(ds._heads)  # the heads of the shards not cached are in memory
            before = len(seen)
            for ids in batches[done:done + 6]:  # the loop's next steps: no request to the store
                assert np.array_equal(ds.__getitems__(ids)["input_ids"].numpy(), here.__getitems__(ids)["input_ids"].numpy())
            assert seen[before:] == []
    finally:
        prefetcher.close()
    assert {name for name, _ in seen} == {"sdl-" + prefetcher._name} and sum(op == "GetObject" for _, op in seen) > 0
    distinct = {i for ids in batches[:15] for i in ds.needs_of(np.array(ids))[0].tolist()}
    assert ds.remote.cache.stats.misses == len(distinct)  # only what the steps read, each once


def test_a_cached_epoch_costs_a_pass_per_chunk_of_steps_not_per_step(s3_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch_module, "RECHECK_S", 3600.0)  # no periodic re-check: count the passes the order asks for
    _, url = s3_dataset(num_tokens=30 * 20_000, tokens_per_shard=20_000, vocab_size=5_000)
    ds = TokenWindows(url, seq_len=100, cache_dir=tmp_path / "cache")
    sampler = ElasticSampler.for_dataset(ds, 16, shuffle="locality", block_size=200)  # 374 steps, read 256 at a time
    for source_id in range(len(ds.index.sources)):
        ds.remote.cache.prefetch(ds.cache_entry(source_id), next_use=1.0)
    prefetcher = start(ds, sampler, depth=16)
    deadline = time.monotonic() + 60
    try:
        for _ in range(len(sampler)):  # one step at a time, each wake-up served before the next step
            prefetcher.advance()
            while prefetcher._wake_at <= prefetcher.consumed and prefetcher.error is None:
                assert time.monotonic() < deadline
                time.sleep(0.001)
    finally:
        prefetcher.close()
    assert prefetcher.error is None and prefetcher.passes <= 3  # the first pass and one per further chunk: not 374
    assert not list((tmp_path / "cache" / ".wants").iterdir())  # an unlimited cache evicts nothing: it is told nothing


@pytest.mark.slow
def test_prefetchers_downloading_at_once_keep_the_cache_within_its_limit(s3_dataset, tmp_path):
    _, url = s3_dataset(num_tokens=24 * 2_000, tokens_per_shard=2_000, vocab_size=5_000)
    limit, cache = 64 * 1024 + 12 * (4_096 + 4_000), tmp_path / "cache"  # 12 of the 24 shards
    datasets = [TokenWindows(url, seq_len=100, cache_dir=cache, cache_limit=limit) for _ in range(3)]
    samplers = [ElasticSampler.for_dataset(ds, 2, shuffle=True, seed=seed) for seed, ds in enumerate(datasets)]
    sizes, done = [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            sizes.append(tree_bytes(cache))

    watcher = threading.Thread(target=sample)
    watcher.start()
    prefetchers = [start(ds, sampler, depth=2, heads=False) for ds, sampler in zip(datasets, samplers)]
    try:
        for step in range(0, 40, 2):
            for prefetcher in prefetchers:
                prefetcher.advance(2)
            patience = time.monotonic() + 5  # a prefetch that would evict what another needs sooner waits: no assert
            while min(p.ready_through for p in prefetchers) < step + 4 and time.monotonic() < patience:
                time.sleep(0.01)
    finally:
        for prefetcher in prefetchers:
            prefetcher.close()
        done.set()
        watcher.join()
    assert sum(ds.remote.cache.stats.misses for ds in datasets) > 24  # they downloaded side by side, and evicted
    assert len(sizes) > 100 and max(sizes) <= limit
