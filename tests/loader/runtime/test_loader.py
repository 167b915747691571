"""Laws of make_loader: resume equivalence with prefetching workers, exactly once across topology changes,
and compatibility with a plain DataLoader and torchdata's StatefulDataLoader."""

import numpy as np
import pytest
import torch
from sdl.loader import ElasticSampler, TokenWindows, make_loader
from sdl.loader.errors import CheckpointError
from sdl.loader.runtime.loader import resolve_topology
from torch.utils.data import DataLoader


def _take(loader, steps):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == steps:
            break
    return out


def _ids(batches):
    return [int(x) for b in batches for x in b["sample_ids"]]


@pytest.mark.parametrize("num_workers,shift", [(0, 1), (2, 1), (2, "random")])
def test_run_save_continue_equals_restore_continue(token_dataset, num_workers, shift):
    ds = TokenWindows(token_dataset(num_tokens=20_000, vocab_size=1000), seq_len=32, shift=shift)
    loader = make_loader(ds, batch_size=4, seed=7, num_workers=num_workers, rank=0, world_size=1)
    _take(loader, 5)  # workers have prefetched well past step 5
    state = loader.state_dict()
    rest = list(loader)
    resumed = make_loader(ds, batch_size=4, seed=7, num_workers=num_workers, rank=0, world_size=1)
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(rest) == len(again) > 0
    for a, b in zip(rest, again):
        assert torch.equal(a["sample_ids"], b["sample_ids"]) and torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["labels"], b["labels"]) and a.get("shift") == b.get("shift")
    assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["cursor"] == 0


def test_exactly_once_when_world_size_batch_size_and_workers_change(token_dataset):
    ds = TokenWindows(token_dataset(num_tokens=12_000, vocab_size=1000), seq_len=16)
    state, seen = None, []
    for world_size, batch_size, num_workers, steps in [(4, 3, 0, 4), (3, 5, 2, 3), (2, 2, 1, 6), (5, 4, 0, None)]:
        loaders = [make_loader(ds, batch_size=batch_size, seed=1, num_workers=num_workers, rank=r, world_size=world_size)
                   for r in range(world_size)]
        for loader in loaders:
            if state is not None:
                loader.load_state_dict(state)
            seen += _ids(_take(loader, steps) if steps else list(loader))
        state = loaders[0].state_dict()
    assert len(seen) == len(set(seen))
    assert len(ds) - len(seen) < 5 * 4  # only the final partial global batch was dropped
    assert state["epoch"] == 1


def test_state_from_other_seq_len_is_refused_with_the_difference(token_dataset):
    path = token_dataset(num_tokens=5_000, vocab_size=1000)
    state = make_loader(TokenWindows(path, seq_len=16), batch_size=2, num_workers=0).state_dict()
    with pytest.raises(CheckpointError, match="seq_len: saved 16, here 32"):
        make_loader(TokenWindows(path, seq_len=32), batch_size=2, num_workers=0).load_state_dict(state)


def test_plain_dataloader_resumes_exactly_with_consumed_steps(token_dataset):
    ds = TokenWindows(token_dataset(num_tokens=8_000, vocab_size=1000), seq_len=16)
    sampler = ElasticSampler(len(ds), 4, seed=3, fingerprint=ds.identity)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, collate_fn=lambda b: b)
    received = _take(loader, 6)
    state = sampler.state_dict(consumed_steps=len(received))  # workers produced more than 6 already
    resumed = ElasticSampler(len(ds), 4, seed=3, fingerprint=ds.identity)
    resumed.load_state_dict(state)
    rest = list(DataLoader(ds, batch_sampler=resumed, num_workers=0, collate_fn=lambda b: b))
    ids = _ids(received) + _ids(rest)
    assert sorted(ids) == sorted(int(x) for b in ElasticSampler(len(ds), 4, seed=3, fingerprint=ds.identity) for x in b)


def test_stateful_dataloader_resumes_exactly(token_dataset):
    tdl = pytest.importorskip("torchdata.stateful_dataloader")
    ds = TokenWindows(token_dataset(num_tokens=8_000, vocab_size=1000), seq_len=16)

    def build():
        sampler = ElasticSampler(len(ds), 4, seed=3, fingerprint=ds.identity)
        return tdl.StatefulDataLoader(ds, batch_sampler=sampler, num_workers=2, collate_fn=_identity)

    loader = build()
    iterator = iter(loader)
    first = [next(iterator) for _ in range(5)]
    state = loader.state_dict()
    rest = list(iterator)
    resumed = build()
    resumed.load_state_dict(state)
    again = list(resumed)
    assert _ids(rest) == _ids(again)
    assert sorted(_ids(first) + _ids(again)) == sorted(int(x) for x in np.concatenate([list(b) for b in ElasticSampler(len(ds), 4, seed=3, fingerprint=ds.identity)]))


def _identity(batch):
    return batch


def test_topology_comes_from_arguments_then_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "5")
    assert resolve_topology(None, None) == (2, 5)
    assert resolve_topology(1, 3) == (1, 3)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert resolve_topology(None, None) == (0, 1)


@pytest.mark.parametrize("options, wording", [
    ({"batch_size": 1.5}, "batch_size=1.5: expected an integer >= 1"),
    ({"batch_size": "4"}, "batch_size='4': expected an integer >= 1"),
    ({"seed": 1.5}, "seed=1.5: expected an integer"),
    ({"drop_last": 1}, "drop_last=1: expected True or False"),
    ({"block_size": 0}, "block_size=0: expected an integer >= 1"),
    ({"rank": True, "world_size": 2}, "rank=True: expected an integer >= 0"),
    ({"num_workers": -1}, "num_workers=-1: expected an integer >= 0"),
    ({"num_workers": 1.5}, "num_workers=1.5: expected an integer >= 0"),
    ({"prefetch_factor": 0}, "prefetch_factor=0: expected None"),
    ({"pin_memory": "x"}, "pin_memory='x': expected None"),
])
def test_bad_arguments_are_config_errors_naming_them(token_dataset, options, wording):
    """Arguments, not a checkpoint: a ConfigError naming the argument (not the state's checkpoint advice, not torch's
    own TypeError, not a silent default)."""
    from sdl.loader.errors import ConfigError

    ds = TokenWindows(token_dataset(num_tokens=2_000), seq_len=16)
    options = {"batch_size": 4, "rank": 0, "world_size": 1, **options}
    with pytest.raises(ConfigError) as raised:
        make_loader(ds, options.pop("batch_size"), device="cpu", **options)
    assert wording in str(raised.value)


def test_a_dataset_without_getitems_is_refused_at_construction():
    from sdl.loader.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset is list, expected an sdl dataset"):
        make_loader(list(range(10)), 2)
