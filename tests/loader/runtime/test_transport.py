"""The worker-to-main transport: a batch survives the trip through a real worker process unchanged."""

import pickle

import pytest
import torch
from sdl.loader.runtime.transport import Ring, WireBatch, encode, from_wire, to_wire


def test_wire_round_trip_keeps_values_dtypes_and_non_tensors():
    batch = {"input_ids": torch.arange(12, dtype=torch.int32).view(3, 4), "sample_ids": torch.tensor([5, 6, 7]), "shift": 2}
    wire = pickle.loads(pickle.dumps(to_wire(batch)))  # what a worker's queue does
    assert isinstance(wire, WireBatch)
    back = from_wire(wire)
    assert back["shift"] == 2 and set(back) == set(batch)
    for key in ("input_ids", "sample_ids"):
        assert back[key].dtype == batch[key].dtype and torch.equal(back[key], batch[key])
    assert from_wire(batch) is batch  # not from a worker: untouched


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.bfloat16])
def test_a_slot_round_trip_keeps_values_dtypes_and_strides_and_frees_the_slot_when_dropped(dtype):
    """A batch viewing a ring slot (any dtype, numpy-named or not, strided or not) arrives equal, views the slot, and
    gives the slot back only once nothing of it is held."""
    ring = Ring(slot_bytes=4096, num_workers=1, depth=2)
    slot = ring.acquire(0, ring.generation)
    memory = ring.slot(0, slot)
    tokens = memory[:2 * 3 * 8 * 8].view(torch.int64).view(2, 3, 8)
    tokens.copy_(torch.arange(48).view(2, 3, 8))
    values = memory[512:512 + 24 * dtype.itemsize].view(dtype).view(4, 6)
    values.copy_(torch.arange(24).view(4, 6).to(dtype))
    sent = {"input_ids": tokens[0], "labels": tokens[1][:, 1:], "values": values.t(), "shift": 1}
    wire = pickle.loads(pickle.dumps(encode(sent, ring, 0, slot, ring.generation)))
    assert set(wire.views) == {"input_ids", "labels", "values"}
    batch = from_wire(wire, ring)
    for key in ("input_ids", "labels", "values"):
        got = batch[key]
        assert got.dtype == sent[key].dtype and got.stride() == sent[key].stride() and torch.equal(got, sent[key]), key
        assert got.data_ptr() == sent[key].data_ptr(), key
    assert batch["shift"] == 1
    kept = batch["values"][1:]
    del batch, got
    ring.release_unused()
    assert ring._stamps[0, slot] != 0  # a view is still held
    del kept
    ring.release_unused()
    assert ring._stamps[0, slot] == 0



@pytest.mark.parametrize("keep", [lambda t: t.numpy(), lambda t: t.untyped_storage(), lambda t: t[1:], lambda t: t.detach(),
                                  lambda t: t.view(-1)])
def test_a_slot_used_again_is_given_back_only_when_nothing_of_its_new_batch_is_held(keep):
    """The ring keeps the arrays a slot's tensors are made from: a batch received into a slot for the second time (same
    views) holds the slot exactly as the first did, through anything taken from one of its tensors."""
    ring = Ring(slot_bytes=4096, num_workers=1, depth=1)
    for round_ in range(3):
        slot = ring.acquire(0, ring.generation)
        assert slot == 0, round_
        tokens = ring.slot(0, slot)[:2 * 3 * 8 * 8].view(torch.int64).view(2, 3, 8)
        tokens.copy_(torch.arange(48).view(2, 3, 8) + round_)
        batch = from_wire(encode({"input_ids": tokens[0], "labels": tokens[1]}, ring, 0, slot, ring.generation), ring)
        kept = keep(batch["labels"])
        del batch
        ring.release_unused()
        assert ring.acquire(0, ring.generation) is None, round_  # still held through `kept`
        del kept
        ring.release_unused()
    assert ring.acquire(0, ring.generation) == 0

def test_dataloader_workers_deliver_identical_batches(token_dataset):
    from sdl.loader import TokenWindows, make_loader

    ds = TokenWindows(token_dataset(num_tokens=4_000, vocab_size=1000), seq_len=16)
    inline = list(make_loader(ds, batch_size=4, seed=2, num_workers=0, device="cpu"))
    workers = list(make_loader(ds, batch_size=4, seed=2, num_workers=2, device="cpu"))
    assert len(inline) == len(workers)
    for a, b in zip(inline, workers):
        assert set(a) == set(b)
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key])


def test_spawned_workers_deliver_identical_batches(token_dataset):
    """With the spawn start method (CUDA users' default choice) everything sent to a worker pickles by reference."""
    from sdl.loader import TokenWindows, make_loader

    ds = TokenWindows(token_dataset(num_tokens=3_000, vocab_size=1000), seq_len=16, shift="random")
    inline = list(make_loader(ds, batch_size=4, seed=2, num_workers=0, device="cpu"))
    spawned = list(make_loader(ds, batch_size=4, seed=2, num_workers=1, device="cpu", multiprocessing_context="spawn"))
    assert [b["sample_ids"].tolist() for b in inline] == [b["sample_ids"].tolist() for b in spawned]
    assert [b["shift"] for b in inline] == [b["shift"] for b in spawned]


def _in_ring(loader, tensor):
    return any(slot.data_ptr() <= tensor.data_ptr() < slot.data_ptr() + slot.numel()
               for row in loader.ring.slots for slot in row)


def test_workers_fill_ring_slots_in_place_and_dropped_batches_give_their_slot_back(token_dataset):
    """Steady state: every batch views a ring slot (no copy, no allocation per batch), slots recycle when dropped."""
    from sdl.loader import TokenWindows, make_loader

    ds = TokenWindows(token_dataset(num_tokens=20_000, vocab_size=1000), seq_len=16, shift="random")
    inline = make_loader(ds, batch_size=4, seed=3, num_workers=0, device="cpu", drop_last=False)
    loader = make_loader(ds, batch_size=4, seed=3, num_workers=2, device="cpu", drop_last=False)
    expected = [{key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in b.items()} for b in inline]
    count = 0
    for k, batch in enumerate(loader):  # each batch dropped when the next is taken
        assert all(_in_ring(loader, batch[key]) for key in ("input_ids", "labels", "sample_ids"))
        assert set(batch) == set(expected[k]) and batch["shift"] == expected[k]["shift"]
        assert all(torch.equal(batch[key], expected[k][key]) for key in ("input_ids", "labels", "sample_ids"))
        count += 1
    assert count == len(expected) > 3 * sum(len(row) for row in loader.ring.slots)  # slots were reused many times over


def test_a_dataset_without_a_slot_layout_crosses_in_ring_slots_too(token_dataset):
    """A Mixture (no gather-into-slot of its own) gets a probed layout: its workers copy each batch into their slot,
    the training process receives views of it, and the stream equals the in-process one; a field outside the
    layout (the mixture's fields all fit; `shift` is a plain value) travels beside the slot."""
    from sdl.loader import Mixture, TokenWindows, make_loader

    web = TokenWindows(token_dataset(num_tokens=24_000, vocab_size=1000, name="web"), seq_len=16, shift="random")
    code = TokenWindows(token_dataset(num_tokens=12_000, vocab_size=1000, name="code"), seq_len=16, shift="random")
    mixture = Mixture({"web": web, "code": code}, weights={"web": 3, "code": 1})
    inline = make_loader(mixture, batch_size=4, seed=3, num_workers=0, device="cpu", shuffle=False)
    loader = make_loader(mixture, batch_size=4, seed=3, num_workers=2, device="cpu", shuffle=False)
    expected = [{key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in b.items()} for b in inline]
    assert loader.ring is not None and inline.ring is None
    received = 0
    for k, batch in enumerate(loader):
        assert set(batch) == set(expected[k])
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, expected[k][key]) and value.dtype == expected[k][key].dtype, key
                assert _in_ring(loader, value), key
            else:
                assert value == expected[k][key], key
        received += 1
    assert received == len(expected) > 3 * sum(len(row) for row in loader.ring.slots)


def test_a_batch_the_caller_keeps_stays_intact(token_dataset):
    """Lifetime rule: a slot is refilled only once nothing references it — kept batches and views never change."""
    from sdl.loader import TokenWindows, make_loader

    ds = TokenWindows(token_dataset(num_tokens=20_000, vocab_size=1000), seq_len=16)
    loader = make_loader(ds, batch_size=4, seed=5, num_workers=2, device="cpu")
    kept, views, snapshots, storages = [], [], [], []
    for k, batch in enumerate(loader):
        if k % 3 == 0:
            kept.append(batch)  # a whole batch
            snapshots.append((batch["input_ids"].clone(), batch["labels"].clone()))
        if k % 5 == 0:
            views.append((batch["labels"][1:, 2:], batch["labels"][1:, 2:].clone()))  # a view only: the batch is dropped
            views.append((batch["input_ids"].numpy()[0], batch["input_ids"][0].clone()))  # a numpy view
        if k % 7 == 0:  # only the storage of a tensor
            labels = batch["labels"]
            storages.append((labels.untyped_storage(), labels.storage_offset(), labels.shape, labels.stride(), labels.clone()))
    assert len(kept) > sum(len(row) for row in loader.ring.slots)  # more kept than the ring holds: the rest came by value
    for batch, (input_ids, labels) in zip(kept, snapshots):
        assert torch.equal(batch["input_ids"], input_ids) and torch.equal(batch["labels"], labels)
    for view, snapshot in views:
        assert torch.equal(torch.as_tensor(view), snapshot)
    for storage, offset, shape, stride, snapshot in storages:
        assert torch.equal(torch.empty(0, dtype=torch.int64).set_(storage, offset, shape, stride), snapshot)


@pytest.mark.gpu
def test_cuda_workers_copy_from_the_registered_ring_and_deliver_identical_batches(token_dataset):
    from sdl.loader import TokenWindows, make_loader

    ds = TokenWindows(token_dataset(num_tokens=40_000, vocab_size=1000), seq_len=16)
    inline = list(make_loader(ds, batch_size=4, seed=2, num_workers=0, device="cpu"))
    loader = make_loader(ds, batch_size=4, seed=2, num_workers=2, device="cuda")
    assert loader.ring is not None and loader.ring.pinned  # cudaHostRegister'ed once
    count = 0
    for a, b in zip(inline, loader):
        assert b["input_ids"].is_cuda and b["input_ids"].dtype == torch.int64
        assert all(torch.equal(a[key], b[key].cpu()) for key in ("input_ids", "labels", "sample_ids"))
        count += 1
    assert count == len(inline)


@pytest.mark.parametrize("persistent", [True, False])
def test_breaking_off_and_iterating_again_delivers_the_same_stream(token_dataset, persistent):
    """Abandoned prefetched batches (their slots still stamped) neither leak into nor corrupt the next iteration."""
    from sdl.loader import TokenWindows, make_loader

    ds = TokenWindows(token_dataset(num_tokens=20_000, vocab_size=1000), seq_len=16)
    inline = [b["sample_ids"].tolist() for b in make_loader(ds, batch_size=4, seed=1, num_workers=0, device="cpu")]
    loader = make_loader(ds, batch_size=4, seed=1, num_workers=2, device="cpu", persistent_workers=persistent)
    got = []
    for stop in (3, 5, None):
        for k, batch in enumerate(loader):
            got.append((batch["sample_ids"].tolist(), batch["input_ids"][:, 0].tolist()))
            if k + 1 == stop:
                break
    assert [ids for ids, _ in got] == inline
    assert all(firsts == [(i * 16) % 1000 for i in ids] for ids, firsts in got)  # token at p is p % vocab
    assert int((loader.ring.stamps > 0).sum()) <= 2  # only the slots of the last batches still held
