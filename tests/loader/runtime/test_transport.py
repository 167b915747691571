"""The worker-to-main transport: a batch survives the trip through a real worker process unchanged."""

import pickle

import torch
from sdl.loader.runtime.transport import WireBatch, from_wire, to_wire


def test_wire_round_trip_keeps_values_dtypes_and_non_tensors():
    batch = {"input_ids": torch.arange(12, dtype=torch.int32).view(3, 4), "sample_ids": torch.tensor([5, 6, 7]), "shift": 2}
    wire = pickle.loads(pickle.dumps(to_wire(batch)))  # what a worker's queue does
    assert isinstance(wire, WireBatch)
    back = from_wire(wire)
    assert back["shift"] == 2 and set(back) == set(batch)
    for key in ("input_ids", "sample_ids"):
        assert back[key].dtype == batch[key].dtype and torch.equal(back[key], batch[key])
    assert from_wire(batch) is batch  # not from a worker: untouched


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
