"""Every route to batches gives the same fields, dtypes and values: make_loader (in process and with a worker),
a plain DataLoader over the ElasticSampler (keep_batch or the default collate), a plain DataLoader(ds, batch_size=B)
with the default collate, and torchdata's StatefulDataLoader as the README shows it."""

import pytest
import torch
import torch.nn.functional as F
from sdl.loader import ElasticSampler, TokenWindows, keep_batch, make_loader
from torch.utils.data import DataLoader

B, SEED = 8, 5


def _sampler(ds):
    return ElasticSampler.for_dataset(ds, batch_size=B, seed=SEED, rank=0, world_size=1)


def _check_same(batches, reference):
    assert len(batches) == len(reference) > 0
    for got, want in zip(batches, reference):
        assert set(got) == set(want) == {"input_ids", "labels", "sample_ids"}
        for key, value in want.items():
            assert got[key].dtype == value.dtype == torch.int64, key
            assert torch.equal(got[key], value), key


def _trains(batch, vocab):
    logits = torch.nn.Embedding(vocab, vocab)(batch["input_ids"])  # an int32 index would be refused by cross_entropy's target
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten()).isfinite()


@pytest.mark.slow
def test_every_route_gives_the_same_fields_dtypes_and_values(token_dataset):
    from torchdata.stateful_dataloader import StatefulDataLoader

    ds = TokenWindows(token_dataset(num_tokens=1_700, vocab_size=300), seq_len=16)  # 106 samples: 13 batches
    reference = list(make_loader(ds, B, seed=SEED, rank=0, world_size=1, num_workers=0, device="cpu"))
    routes = {
        "make_loader, 1 worker": make_loader(ds, B, seed=SEED, rank=0, world_size=1, num_workers=1, device="cpu"),
        "DataLoader + ElasticSampler + keep_batch": DataLoader(ds, batch_sampler=_sampler(ds), collate_fn=keep_batch),
        "DataLoader + ElasticSampler, default collate": DataLoader(ds, batch_sampler=_sampler(ds)),
        "StatefulDataLoader (README)": StatefulDataLoader(ds, batch_sampler=_sampler(ds), num_workers=1, collate_fn=keep_batch),
    }
    for name, loader in routes.items():
        batches = list(loader)
        _check_same(batches, reference)
        assert _trains(batches[0], 300), name


def test_plain_dataloader_with_the_default_collate_gives_the_gathered_batch(token_dataset):
    ds = TokenWindows(token_dataset(num_tokens=1_700, vocab_size=300), seq_len=16)
    batches = list(DataLoader(ds, batch_size=B))  # was KeyError: 0
    assert len(batches) == -(-len(ds) // B)
    whole = [ds.__getitems__(list(range(k, min(k + B, len(ds))))) for k in range(0, len(ds), B)]
    _check_same(batches, [dict(batch) for batch in whole])
    assert torch.equal(batches[3]["input_ids"][2], ds[3 * B + 2]["input_ids"])  # the same as one sample read alone
    assert _trains(batches[0], 300)


def test_a_batch_larger_than_the_dataset_is_refused_when_the_loader_is_built(token_dataset):
    from sdl.loader.errors import ConfigError

    ds = TokenWindows(token_dataset(num_tokens=1_700, vocab_size=300), seq_len=16)  # 106 samples
    with pytest.raises(ConfigError, match="global batch of 128 samples .* larger than the dataset's 106 samples"):
        make_loader(ds, 128, rank=0, world_size=1, num_workers=0, device="cpu")  # was: len(loader) == 0, no batch
    with pytest.raises(ConfigError, match=r"global batch of 107 samples \(107 rank\(s\) × batch_size 1\)"):
        make_loader(ds, 1, rank=0, world_size=107, num_workers=0, device="cpu")
    assert len(make_loader(ds, 128, rank=0, world_size=1, num_workers=0, device="cpu", drop_last=False)) == 1
