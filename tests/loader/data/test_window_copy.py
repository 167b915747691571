"""TokenWindows' copy (sdl.loader.data.window_copy): a sampler batch located with its chunk of steps is the same batch as
its ids gathered alone, on every copy path (one shard's window view, a span view over several shards, per-row
copies); ids checked per
chunk; no window view travels with a pickled dataset; batches kept by the caller stay intact."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sdl.loader.data.window_copy import plan_of
from sdl.loader.data.windows import TokenWindows
from sdl.loader.errors import FormatError
from sdl.loader.runtime.loader import make_loader
from sdl.loader.sampling.batches import share_chunk
from sdl.loader.sampling.sampler import ElasticSampler, SampleBatch, StepChunk
from sdl.prepare.synthetic import write_synthetic_dataset

VOCAB = 70_000


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("window_copy")
    out = {}
    for name, per_shard in (("one_shard", 5_000), ("shards_of_40", 40), ("shards_of_300", 300)):
        write_synthetic_dataset(root / name, num_tokens=3_000, tokens_per_shard=per_shard, vocab_size=VOCAB)
        out[name] = root / name
    return out


def expected(ds, ids, shift):
    starts = (np.asarray(ids, dtype=np.int64) + ds._windows.start) * ds.stride
    positions = starts[:, None] + np.arange(ds.seq_len)
    return positions % VOCAB, (positions + shift) % VOCAB


def check_exact(ds, ids, batch, shift):
    inputs, labels = expected(ds, ids, shift)
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
    assert batch["input_ids"].is_contiguous() and batch["labels"].is_contiguous()
    np.testing.assert_array_equal(batch["input_ids"].reshape(len(ids), -1).numpy(), inputs)
    np.testing.assert_array_equal(batch["labels"].reshape(len(ids), -1).numpy(), labels)
    assert batch["sample_ids"].dtype == torch.int64 and batch["sample_ids"].tolist() == list(ids)


@pytest.mark.parametrize("name", ["one_shard", "shards_of_40", "shards_of_300"])
@pytest.mark.parametrize("options", [dict(seq_len=16), dict(seq_len=12, stride=5, shift=3), dict(seq_len=12, shift=4, layout="grouped"),
                                     dict(seq_len=12, stride=7, shift="random"), dict(seq_len=8, split="val", split_rate=0.7)])
def test_sampler_batches_located_by_chunk_equal_their_ids_gathered_alone(paths, name, options):
    ds = TokenWindows(paths[name], **options)
    sampler = ElasticSampler(len(ds), 7, seed=3, fingerprint=ds.identity, drop_last=False)  # the last step padded
    for epoch in range(2):
        for batch in sampler:
            assert batch.chunk is not None and batch.chunk.ids[batch.step].tolist() == list(batch)
            got = ds.__getitems__(batch)
            shift = got.get("shift", options.get("shift", 1))
            assert shift == ds.batch_shift(batch)
            check_exact(ds, list(batch), got, shift)
            alone = ds.__getitems__(list(batch)) if options.get("shift") != "random" else None
            if alone is not None:
                assert list(alone) == list(got) and all(torch.equal(alone[k], got[k]) for k in got)


def test_every_copy_path_is_taken(paths):
    """A batch inside one shard is one window-view gather; a batch whose windows lie in several shards is one fancy
    index of a SpanView when the chunk's windows lie in at most SPAN_SHARDS shards that the LRU keeps open (a window
    across a boundary then read piecewise over its row); else it is copied row by row."""
    for name, options, kinds in (("one_shard", {}, {"one"}), ("shards_of_40", {}, {"span"}),  # windows across, in each step
                                 ("shards_of_300", {"stride": 20}, {"one", "span"}),  # 300 = 15 strides: none across
                                 ("shards_of_300", {"stride": 20, "max_open_shards": 4}, {"one", "rows"}),
                                 ("shards_of_300", {"stride": 16}, {"one", "span"})):  # a window across each boundary
        ds = TokenWindows(paths[name], seq_len=16, **options)
        sampler = ElasticSampler(len(ds), 4, seed=1, fingerprint=ds.identity, shuffle=False)  # runs of consecutive ids
        chunk = next(iter(sampler)).chunk
        plan = plan_of(ds, chunk)
        taken = {"one" if plan.single[k] >= 0 else "span" if plan.spanned(k) is not None else "rows" for k in range(len(chunk.ids))}
        assert taken == kinds, (name, options)


def test_a_span_view_made_over_shards_the_lru_has_reopened_is_made_again(paths):
    """The LRU may close a shard and map it anew (another address): a step of the chunk then makes its SpanView again
    (its old one holds the old maps, so nothing it addresses is ever unmapped), and the batches stay exact."""
    ds = TokenWindows(paths["shards_of_300"], seq_len=16, stride=20)
    steps = list(ElasticSampler(len(ds), 4, seed=1, fingerprint=ds.identity))
    plan = plan_of(ds, steps[0].chunk)
    spanned = [batch for batch in steps if plan.single[batch.step] < 0 and plan.spanned(batch.step) is not None]
    assert len(spanned) >= 4
    first_view = plan.spanned(spanned[0].step)[0]
    check_exact(ds, list(spanned[0]), ds.__getitems__(spanned[0]), 1)
    ds._open.items.clear()  # every shard closed: the next visit maps them anew
    for batch in spanned[1:]:
        check_exact(ds, list(batch), ds.__getitems__(batch), 1)
    assert plan.spanned(spanned[-1].step)[0] is not first_view
    assert all(plan._span[0].held(shard) is ds._shard(shard) for shard in np.unique(plan.first[plan.inside]).tolist())


def test_ids_outside_the_dataset_are_refused_per_chunk(paths):
    ds = TokenWindows(paths["shards_of_300"], seq_len=16)
    chunk = StepChunk(np.array([[0, 1], [2, len(ds)]], dtype=np.int64))
    with pytest.raises(IndexError, match=f"sample {len(ds)} is outside"):
        ds.__getitems__(SampleBatch([0, 1], seed=0, epoch=0, position=0, chunk=chunk, step=0))


def test_a_sampler_batch_changed_after_the_sampler_made_it_is_gathered_as_it_now_reads(paths):
    ds = TokenWindows(paths["shards_of_300"], seq_len=16)
    batches = iter(ElasticSampler(len(ds), 4, seed=2, fingerprint=ds.identity))
    first, second = next(batches), next(batches)
    ds.__getitems__(first)  # the chunk is planned
    second[1:3] = [0, len(ds) - 1]  # e.g. a wrapper remapping ids in place
    check_exact(ds, list(second), ds.__getitems__(second), 1)


def test_a_pickled_dataset_carries_no_window_view(paths):
    ds = TokenWindows(paths["one_shard"], seq_len=16)
    fresh = len(pickle.dumps(ds))
    ds.__getitems__(next(iter(ElasticSampler(len(ds), 8, fingerprint=ds.identity))))  # one window-view gather
    assert ds._views is not None
    assert len(pickle.dumps(ds)) <= fresh + 64  # a view pickles as a copy of every window (~180 kB here)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._views is None and torch.equal(copy.__getitems__([3, 4])["input_ids"], ds.__getitems__([3, 4])["input_ids"])


@pytest.mark.parametrize("name", ["one_shard", "shards_of_40"])
def test_batches_kept_by_the_caller_stay_intact(paths, name):
    ds = TokenWindows(paths[name], seq_len=16, stride=9)
    loader = make_loader(ds, 6, seed=5, num_workers=0, device="cpu", rank=0, world_size=1)
    kept = list(loader)
    assert len(kept) == len(ds) // 6
    assert len({batch["input_ids"].data_ptr() for batch in kept}) == len(kept)  # no output memory reused
    for batch in kept:
        check_exact(ds, batch["sample_ids"].tolist(), batch, 1)
    seen = torch.cat([batch["sample_ids"] for batch in kept])
    assert len(set(seen.tolist())) == len(seen)  # exactly once


@pytest.mark.parametrize("name", ["one_shard", "shards_of_40", "shards_of_300"])
@pytest.mark.parametrize("options", [dict(seq_len=16), dict(seq_len=12, stride=7, shift="random")])
def test_a_worker_task_located_at_once_equals_its_batches_gathered_alone(paths, name, options):
    """A DataLoader worker receives a task's SampleBatches pickled, without their chunk: `share_chunk` gives the task one
    chunk of their ids, and each batch, also gathered into a ring slot's arrays, is its ids' own batch."""
    ds = TokenWindows(paths[name], **options)
    sampler = ElasticSampler(len(ds), 5, seed=4, fingerprint=ds.identity, drop_last=False)
    task = pickle.loads(pickle.dumps([batch for _, batch in zip(range(8), sampler)]))
    assert all(batch.chunk is None for batch in task)
    share_chunk(task)
    assert all(batch.chunk is task[0].chunk and batch.chunk.ids[batch.step].tolist() == list(batch) for batch in task)
    arrays = {name: np.zeros(shape, dtype) for name, (shape, dtype) in ds.slot_layout(5).items()}
    for batch in task:
        shift = ds.batch_shift(batch)
        check_exact(ds, list(batch), ds.__getitems__(batch), shift)
        check_exact(ds, list(batch), ds.getitems_into(batch, arrays), shift)


def test_share_chunk_leaves_batches_of_other_lengths_and_plain_lists_alone():
    ragged = [SampleBatch([0, 1], seed=0, epoch=0, position=0), SampleBatch([2], seed=0, epoch=0, position=2)]
    lists = [[0, 1], [2, 3]]
    share_chunk(ragged)
    share_chunk(lists)
    assert all(batch.chunk is None for batch in ragged)


def test_a_shard_changed_after_the_lru_closed_it_is_named_not_read(tmp_path):
    """A chunk's SpanView maps shards that the LRU may close since (other reads of the dataset): a batch never reads
    through such a map, which the LRU's size checks no longer cover; it takes the shards through the LRU again, and
    the LRU names the changed file (here truncated: its map would read zeros, or kill the process with SIGBUS)."""
    write_synthetic_dataset(tmp_path / "ds", num_tokens=6 * 4_096, tokens_per_shard=4_096, vocab_size=VOCAB)
    ds = TokenWindows(tmp_path / "ds", seq_len=8, max_open_shards=4)
    per = 4_096 // 8  # windows a shard
    steps = [SampleBatch([0, per + 1], seed=0, epoch=0, position=0), SampleBatch([5, 2 * per + 3], seed=0, epoch=0, position=2)]
    share_chunk(steps)  # one chunk over shards 0, 1, 2: both steps span two shards
    check_exact(ds, list(steps[0]), ds.__getitems__(steps[0]), 1)
    assert steps[0].chunk.prepared.spanned(1) is not None
    for shard in (3, 4, 5):
        ds[shard * per]  # other reads push shards out of the LRU of 4
    assert 2 not in ds._open.items and steps[0].chunk.prepared._span[0].held(2) is not None
    os.truncate(ds.index.path_of(2), 128)
    with pytest.raises(FormatError, match="shard-000002.npy is now 128 bytes"):
        ds.__getitems__(steps[1])


def test_a_step_asked_for_again_is_not_what_the_caller_did_to_it(paths):
    """A batch's tensors are its own: editing them in place changes nothing the plan hands out later."""
    ds = TokenWindows(paths["shards_of_300"], seq_len=16, stride=20)
    for batch in list(ElasticSampler(len(ds), 4, seed=1, fingerprint=ds.identity))[:8]:
        first = ds.__getitems__(batch)
        for value in first.values():
            value.add_(1_000)
        check_exact(ds, list(batch), ds.__getitems__(batch), 1)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts maps in /proc/self/maps (Linux)")
def test_batches_kept_by_the_caller_keep_no_more_maps_than_the_lru_and_one_view(tmp_path):
    write_synthetic_dataset(tmp_path / "ds", num_tokens=24 * 8_200, tokens_per_shard=8_200, vocab_size=VOCAB)
    ds = TokenWindows(tmp_path / "ds", seq_len=7, stride=8, max_open_shards=6)  # 1,025 windows a shard
    kept = list(ElasticSampler(len(ds), 4, seed=0, shuffle=False, fingerprint=ds.identity))  # chunks over 5 shards
    spanned = 0
    for batch in kept:
        check_exact(ds, list(batch), ds.__getitems__(batch), 1)
        spanned += batch.chunk.prepared._span is not None and batch.chunk.prepared._span[0] is not None
    with open("/proc/self/maps") as maps:
        mapped = {line.split()[-1] for line in maps if str(tmp_path / "ds") in line}
    assert spanned and len(mapped) <= 6 + 6  # the LRU's, and the last chunk's view's (all 24 held before)
