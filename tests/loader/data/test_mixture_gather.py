"""A Mixture of TokenWindows gathers its sources' rows straight into one batch: the same batch as assembling the
sources' own batches, on every field, layout and shift; and it is the route taken (in process and into ring slots)."""

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader import Mixture, TokenWindows, make_loader
from sdl.loader.data.documents import cu_seqlens
from sdl.loader.sampling.sampler import ElasticSampler, SampleBatch
from sdl.prepare import PrepareConfig, prepare

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mixture_checks import assembled, assert_same

SEQ_LEN = 8
OPTIONS = {  # name -> TokenWindows options of every source (the mixture's sources must agree on their fields)
    "flat": {},
    "flat, shift 1 and 2": {"shift": 1},  # the second source gets shift=2 (below): rows keep their own source's shift
    "grouped": {"shift": 2, "layout": "grouped"},
    "random shift": {"shift": "random"},
    "random shift, grouped": {"shift": "random", "layout": "grouped"},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three prepared token datasets of varied documents, 64-token shards (windows cross shards), with document starts."""
    root, rng = tmp_path_factory.mktemp("gather"), random.Random(3)
    out = []
    for name, docs in (("web", 30), ("code", 12), ("math", 7)):
        texts = root / f"{name}-texts"
        texts.mkdir()
        for i in range(docs):
            words = rng.choice([1, 2, 5, 9, 40, 130])
            (texts / f"d{i:02d}.txt").write_text(" ".join(rng.choice(["the", "data", "x=1;", "shard", "数据"]) for _ in range(words)))
        prepare(PrepareConfig(sources=(str(texts),), out=str(root / name), tokens_per_shard=64))
        out.append(root / name)
    return out


def mixture_of(folders, option, doc_starts=True, weights=(5, 2, 1), **extra):
    sources = {}
    for i, (folder, weight) in enumerate(zip(folders, weights)):
        kwargs = dict(OPTIONS[option], stride=3 + i)
        if option == "flat, shift 1 and 2" and i == 1:
            kwargs["shift"] = 2
        sources[folder.name] = TokenWindows(folder, seq_len=SEQ_LEN, doc_starts=doc_starts, **kwargs)
    return Mixture(sources, weights=dict(zip(sources, weights)), **extra)


def sampler_batches(mixture, batch_size, seed, steps):
    sampler = ElasticSampler.for_dataset(mixture, batch_size, seed=seed, shuffle=False, drop_last=False)
    sampler.set_epoch(seed % 3)
    return [batch for _, batch in zip(range(steps), sampler)]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(OPTIONS)), st.booleans(), st.integers(0, 2**31), st.integers(1, 12))
def test_rows_gathered_in_place_equal_the_assembled_batch(folders, option, doc_starts, seed, batch_size):
    mixture = mixture_of(folders, option, doc_starts)
    rng = np.random.default_rng(seed)
    batches = sampler_batches(mixture, batch_size, seed, 3)  # carry seed, epoch, position and the mixture's phase
    batches += [rng.integers(0, len(mixture), size=batch_size).tolist() for _ in range(2)]  # a plain DataLoader's
    batches.append(SampleBatch(sorted(rng.choice(len(mixture), batch_size, replace=False).tolist()), seed=seed, epoch=1,
                               position=int(rng.integers(0, 10**6)), context=mixture.describe()["context"]))
    for indices in batches:
        batch = mixture.__getitems__(indices)
        assert_same(batch, assembled(mixture, indices))
        # gathered in place: inputs and labels are two halves of one array, not two assembled copies
        inputs = batch["input_ids"]
        assert batch["labels"].data_ptr() == inputs.data_ptr() + inputs.numel() * inputs.element_size()
        for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
            if "shift" not in batch:  # a single sample has shift 1 under shift="random"
                sample = mixture.sources[s][i]
                assert all(torch.equal(batch[k][row], sample[k]) for k in ("input_ids", "labels", "position_ids") if k in sample)
        if doc_starts:
            bounds, longest = cu_seqlens(batch["position_ids"].reshape(len(indices), -1).numpy())
            assert batch["cu_seqlens"].tolist() == bounds.tolist() and batch["max_seqlen"] == longest
    one = mixture[len(mixture) - 1]  # a sample: no batch-wide fields, as a TokenWindows sample
    assert "cu_seqlens" not in one and "max_seqlen" not in one and one["input_ids"].numel() == SEQ_LEN


def test_doc_starts_sources_give_the_whole_batchs_document_segments(folders):
    """A batch of two doc_starts sources on the assembled route (a renamed field) failed before: their cu_seqlens were
    stacked as rows. Its segments are the whole batch's, as on the row route."""
    mixture = mixture_of(folders[:2], "flat", weights=(1, 1), rename={n.name: {"labels": "targets"} for n in folders[:2]})
    batch = mixture.__getitems__(list(range(10)))
    assert sorted(set(batch["source"].tolist())) == [0, 1]
    rows = [mixture.sources[s][i]["position_ids"] for s, i in zip(batch["source"].tolist(), batch["source_ids"].tolist())]
    assert torch.equal(batch["position_ids"], torch.stack(rows))
    bounds, longest = cu_seqlens(torch.stack(rows).numpy())
    assert batch["cu_seqlens"].tolist() == bounds.tolist() and batch["max_seqlen"] == longest


def test_ring_slots_hold_the_gathered_batch_and_workers_deliver_the_same_stream(folders):
    mixture = mixture_of(folders, "random shift")
    layout = mixture.slot_layout(6)
    assert set(layout) == {"tokens", "sample_ids", "position_ids", "source", "source_ids"}
    slot = {name: np.full(shape, -1, dtype=dtype) for name, (shape, dtype) in layout.items()}
    for indices in sampler_batches(mixture, 5, 7, 4):
        batch = mixture.getitems_into(indices, slot)
        assert_same(batch, assembled(mixture, indices))
        memory = [(a.ctypes.data, a.ctypes.data + a.nbytes) for a in slot.values()]
        for name, value in batch.items():  # every per-row tensor views the slot; the batch-wide ones travel by value
            if isinstance(value, torch.Tensor) and name != "cu_seqlens":
                assert any(lo <= value.data_ptr() < hi for lo, hi in memory), name
    narrow = mixture.with_host_dtype(np.int32)  # what make_loader gathers for a GPU
    indices = sampler_batches(narrow, 5, 7, 1)[0]
    batch, wide = narrow.__getitems__(indices), mixture.__getitems__(indices)
    assert batch["input_ids"].dtype == torch.int32 and torch.equal(batch["input_ids"].long(), wide["input_ids"])
    in_process = [b["input_ids"].clone() for b in make_loader(mixture, 4, seed=2, shuffle=False, num_workers=0, device="cpu")]
    with_workers = [b["input_ids"].clone() for b in make_loader(mixture, 4, seed=2, shuffle=False, num_workers=2, device="cpu")]
    assert len(in_process) == len(with_workers) > 0 and all(torch.equal(a, b) for a, b in zip(in_process, with_workers))


def test_sources_that_cannot_gather_rows_are_assembled(folders):
    renamed = mixture_of(folders[:2], "flat", doc_starts=False, weights=(1, 1),
                         rename={n.name: {"labels": "targets"} for n in folders[:2]})
    assert not hasattr(renamed, "slot_layout") and not hasattr(renamed, "getitems_into")
    batch = renamed.__getitems__(list(range(6)))
    assert "targets" in batch and batch["input_ids"].untyped_storage().data_ptr() != batch["targets"].untyped_storage().data_ptr()
    nested = Mixture({"inner": mixture_of(folders[:2], "flat", doc_starts=False, weights=(1, 1)),
                      "math": TokenWindows(folders[2], seq_len=SEQ_LEN)}, weights={"inner": 1, "math": 1})
    assert not hasattr(nested, "getitems_into")
    batch = nested.__getitems__(list(range(8)))
    for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
        assert torch.equal(batch["input_ids"][row], nested.sources[s][i]["input_ids"])
