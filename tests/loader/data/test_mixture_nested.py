"""Nested mixture laws: an outer mixture's pass p over an inner mixture is the inner's epoch p, read with the outer's
seed, so the inner's sources run their passes exactly once each, across the outer's epochs and resumes."""

import torch
from sdl.loader import Mixture, make_loader

from tests.loader.data.test_mixture import check_passes


def nested(sources):
    inner = Mixture({"small": sources["code"], "large": sources["web"]}, weights={"small": 1, "large": 1})  # 173 positions
    return inner, Mixture({"inner": inner, "other": sources["math"]}, weights={"inner": 3, "other": 1}, num_samples=240)


def deliver(outer, seed, segments):
    """The inner mixture's stream positions in the order the outer delivers them over `segments` [(batch_size, workers,
    steps)], each loader resuming the last one's state; every row's content checked against its source."""
    inner, state, positions = outer.sources[0], None, []
    for batch_size, workers, steps in segments:
        loader = make_loader(outer, batch_size, seed=seed, shuffle=False, num_workers=workers, rank=0, world_size=1, device="cpu")
        if state is not None:
            loader.load_state_dict(state)
        for _, batch in zip(range(steps), loader):
            mine = batch["source"] == 0
            ids = batch["source_ids"][mine].tolist()
            expected = inner.stream_items(ids, seed)["input_ids"]
            assert torch.equal(batch["input_ids"][mine], expected)
            assert all(torch.equal(row, outer.sources[1][i]["input_ids"])
                       for row, i in zip(batch["input_ids"][~mine], batch["source_ids"][~mine].tolist()))
            positions += ids
        state = loader.state_dict()
    return positions


def test_each_outer_pass_over_a_nested_mixture_is_its_next_epoch_and_its_sources_run_whole_passes(sources):
    inner, outer = nested(sources)
    n = len(inner)
    positions = deliver(outer, 5, [(8, 0, 13), (4, 2, 10**6), (5, 0, 10**6), (6, 0, 10**6)])  # 3 epochs, none dropped
    passes = len(positions) // n
    assert passes == 3
    for p in range(passes):  # outer pass p: every position of the inner's epoch p once
        assert sorted(positions[p * n:(p + 1) * n]) == list(range(p * n, (p + 1) * n))
    stream = inner.stream_items(list(range(passes * n)), 5)
    rows = zip(stream["source"].tolist(), stream["source_ids"].tolist())
    check_passes(inner, [(k // n, k % n, inner.names[s], i) for k, (s, i) in enumerate(rows)], seed=5)
    large = set(stream["source_ids"][stream["source"] == 1].tolist())
    assert len(large) == len(sources["web"])  # every sample of the large source (it was the same 86 of 249, pass after pass)
    other_seed = inner.stream_items(list(range(n)), 6)["source_ids"]
    assert not torch.equal(other_seed, stream["source_ids"][:n])  # the outer's seed reshuffles the inner's sources
