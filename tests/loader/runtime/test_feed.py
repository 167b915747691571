"""The device feed: CPU pass-through, narrow-copy-then-widen, ordering, the side stream, the on_yield hook."""

from __future__ import annotations

from collections import namedtuple

import pytest
import sdl.loader.runtime.feed as feed_module
import torch
from sdl.loader.errors import ConfigError
from sdl.loader.runtime.feed import (
    DeviceFeed,
    ready_on_cpu,
    resolve_device,
    tensors_of,
    to_device,
)

Pair = namedtuple("Pair", "left right")


def make_batch(k: int) -> dict:
    return {"input_ids": torch.arange(8, dtype=torch.int32).view(2, 4) + k, "labels": torch.arange(8, dtype=torch.int32).view(2, 4) + k + 1,
            "sample_ids": torch.tensor([2 * k, 2 * k + 1]), "shift": 1, "extra": {"labels": torch.ones(2, dtype=torch.int16),
            "weights": torch.ones(2), "pair": Pair(torch.zeros(1), "x")}}


def test_cpu_feed_copies_nothing_but_widens_token_tensors():
    batches = [make_batch(k) for k in range(3)]
    seen = []
    out = list(DeviceFeed(batches, "cpu", on_yield=seen.append))
    assert len(out) == 3 and all(a is b for a, b in zip(seen, out))
    for got, host in zip(out, batches):
        assert got["sample_ids"] is host["sample_ids"] and got["extra"]["weights"] is host["extra"]["weights"]
        assert got["input_ids"].dtype == got["labels"].dtype == torch.int64
        assert torch.equal(got["input_ids"], host["input_ids"].long())
    assert [b["shift"] for b in DeviceFeed(batches, None)] == [1, 1, 1]


def test_a_cpu_batch_that_needs_nothing_is_handed_over_as_it_is_and_any_other_goes_through_to_device():
    ready = {"input_ids": torch.zeros(2, 3, dtype=torch.int64), "labels": torch.ones(2, 3, dtype=torch.int64),
             "weights": torch.ones(2, dtype=torch.float16), "mask": torch.ones(2, dtype=torch.bool), "shift": 2}
    narrow = dict(ready, labels=torch.ones(2, 3, dtype=torch.int32))
    nested = dict(ready, extra={"labels": torch.ones(2, dtype=torch.int16)})
    elsewhere = dict(ready, labels=torch.ones(2, 3, dtype=torch.int64, device="meta"))  # to_device would move it
    assert ready_on_cpu(ready) and not any(ready_on_cpu(b) for b in (narrow, nested, elsewhere, [ready["input_ids"]]))
    for background in (False, True):
        out = list(DeviceFeed([ready, narrow, nested], "cpu", background=background))
        assert out[0] is ready
        assert out[1]["labels"].dtype == torch.int64 and out[2]["extra"]["labels"].dtype == torch.int64
        assert narrow["labels"].dtype == torch.int32  # the host batch is untouched


def test_on_yield_runs_before_each_batch_reaches_the_caller():
    events = []
    for batch in DeviceFeed(iter([make_batch(k) for k in range(3)]), "cpu", on_yield=lambda b: events.append(("hook", b["shift"]))):
        events.append(("caller", batch["shift"]))
    assert events == [("hook", 1), ("caller", 1)] * 3


def test_to_device_widens_token_tensors_only_and_keeps_structure():
    batch = make_batch(5)
    moved = to_device(batch, "cpu")
    assert moved["input_ids"].dtype == torch.int64 and moved["labels"].dtype == torch.int64
    assert torch.equal(moved["input_ids"], batch["input_ids"].long()) and torch.equal(moved["labels"], batch["labels"].long())
    assert moved["sample_ids"] is batch["sample_ids"]  # already int64: no copy
    assert moved["extra"]["labels"].dtype == torch.int64  # nested token key
    assert moved["extra"]["weights"].dtype == torch.float32
    assert isinstance(moved["extra"]["pair"], Pair) and moved["extra"]["pair"].right == "x"
    assert moved["shift"] == 1
    assert batch["input_ids"].dtype == torch.int32  # the host batch is untouched
    assert [t.shape for t in tensors_of([batch["input_ids"], (batch["labels"],)])] == [(2, 4), (2, 4)]


def test_other_devices_copy_synchronously_and_widen():
    out = list(DeviceFeed([make_batch(0), make_batch(1)], "meta"))
    assert [b["input_ids"].device.type for b in out] == ["meta", "meta"]
    assert out[0]["input_ids"].dtype == torch.int64 and out[1]["sample_ids"].dtype == torch.int64


def test_bad_devices_are_refused_with_a_message():
    with pytest.raises(ConfigError, match="expected 'cpu'"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            DeviceFeed([], "cuda")


@pytest.mark.gpu
def test_cuda_feed_copies_ahead_on_a_side_stream_widens_and_keeps_order(monkeypatch):
    streams = []
    real = feed_module.to_device

    def spy(batch, device, stream=None, widen_keys=feed_module.TOKEN_KEYS):
        streams.append(stream)
        return real(batch, device, stream=stream, widen_keys=widen_keys)

    monkeypatch.setattr(feed_module, "to_device", spy)
    batches = [make_batch(k) for k in range(5)]
    feed = DeviceFeed(batches, "cuda", on_yield=lambda b: None)
    for k, batch in enumerate(feed):
        assert len(streams) == min(k + 2, 5)  # batch k+1's copy was issued before batch k was handed over
        assert batch["input_ids"].is_cuda and batch["input_ids"].dtype == torch.int64
        assert batch["labels"].dtype == torch.int64 and batch["extra"]["weights"].dtype == torch.float32
        assert torch.equal(batch["input_ids"].cpu(), batches[k]["input_ids"].long())
        assert torch.equal(batch["sample_ids"].cpu(), batches[k]["sample_ids"])
        assert batch["shift"] == 1
        torch.cuda.synchronize()
    assert feed.stream is not None and feed.stream != torch.cuda.current_stream()
    assert all(stream is feed.stream for stream in streams)
    assert batches[0]["input_ids"].dtype == torch.int32


@pytest.mark.gpu
def test_cuda_feed_overlaps_a_large_copy_with_compute():
    """The copy of the batch after next runs on the side stream *while* the compute stream is busy with a kernel
    launched before that copy was issued: it finishes first. A copy on the compute stream would queue behind the
    kernel; a copy issued lazily would not be pending when next() returns. (Order of completion, not timing.)"""
    rows = 64 * 1024 * 1024 // 64  # 256 MB of int32 per batch: its copy takes milliseconds, far longer than a host step
    big = [{"input_ids": (torch.arange(64 * rows, dtype=torch.int32).view(64, rows) + k).pin_memory()} for k in range(3)]
    feed = DeviceFeed(big, "cuda:0")
    batches = iter(feed)
    first = next(batches)  # batch 1's copy is issued before batch 0 is handed over
    torch.cuda.synchronize()
    compute = torch.cuda.current_stream()
    torch.cuda._sleep(2_000_000_000)  # the "training step" on batch 0: ~1 s of one kernel on the compute stream
    step_done = torch.cuda.Event()
    step_done.record(compute)
    second = next(batches)  # issues batch 2's copy on the side stream, after the step's kernel was queued
    assert not feed.stream.query(), "batch 2's copy was not pending on the side stream when next() returned"
    copied_during_step = False
    while not step_done.query():
        if feed.stream.query():
            copied_during_step = True
            break
    assert copied_during_step, "the copy did not run concurrently with the compute stream's kernel"
    third = next(batches)
    torch.cuda.synchronize()
    for k, batch in enumerate((first, second, third)):
        assert batch["input_ids"].dtype == torch.int64 and torch.equal(batch["input_ids"].cpu(), big[k]["input_ids"].long())


def test_background_feed_keeps_order_widens_and_hooks_only_handed_over_batches():
    handed = []
    out = []
    for batch in DeviceFeed((make_batch(k) for k in range(6)), "cpu", on_yield=lambda b: handed.append(int(b["sample_ids"][0])),
                            background=True):
        out.append(batch)
        if len(out) == 3:
            break  # the thread has received more than 3: they are dropped, not counted
    assert handed == [0, 2, 4] and [int(b["sample_ids"][0]) for b in out] == [0, 2, 4]
    assert out[0]["input_ids"].dtype == torch.int64
    assert not [t for t in __import__("threading").enumerate() if t.name == "sdl-feed"]  # stopped on break


def test_background_feed_raises_source_errors_in_the_caller():
    def failing():
        yield make_batch(0)
        raise ValueError("shard-000003.npy is truncated")

    feed = iter(DeviceFeed(failing(), "cpu", background=True))
    next(feed)
    with pytest.raises(ValueError, match="truncated"):
        next(feed)
