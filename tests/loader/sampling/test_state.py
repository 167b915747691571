"""Laws of LoaderState: the remaining stream, advancing, round trips, refusal of bad states."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.errors import CheckpointError
from sdl.loader.sampling.state import LoaderState


def _consumed_set(state):
    return set(range(state.cursor)) | {p for a, b in state.consumed for p in range(a, b)}


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_position_of_enumerates_exactly_the_unconsumed_positions(n, data):
    cursor = data.draw(st.integers(0, n))
    ranges = data.draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), max_size=6))
    state = LoaderState(fingerprint="f", num_samples=n, seed=0, cursor=cursor, consumed=tuple(ranges))
    consumed = _consumed_set(state)
    expected = [p for p in range(n) if p not in consumed]
    assert state.position_of(np.arange(state.remaining)).tolist() == expected
    count = data.draw(st.integers(0, state.remaining))
    after = state.advance(count)
    assert _consumed_set(after) == consumed | set(expected[:count])
    assert after.position_of(np.arange(after.remaining)).tolist() == expected[count:]


def test_round_trip_through_json_and_torch_weights_only(tmp_path):
    state = LoaderState(fingerprint="abc", num_samples=1000, seed=5, epoch=2, cursor=40, consumed=((50, 60),),
                        world_size=4, batch_size=8, rank=1, dataset={"kind": "tokens", "seq_len": 16})
    assert LoaderState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    torch.save({"loader": state.to_dict()}, tmp_path / "ckpt.pt")
    assert LoaderState.from_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["loader"]) == state


def test_unknown_version_and_keys_and_corrupt_values_are_refused():
    good = LoaderState(fingerprint="abc", num_samples=10, seed=0).to_dict()
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        LoaderState.from_dict({**good, "version": 99})
    with pytest.raises(CheckpointError, match="unknown keys"):
        LoaderState.from_dict({**good, "future": 1})
    with pytest.raises(CheckpointError, match="cursor"):
        LoaderState.from_dict({**good, "cursor": 11})
    with pytest.raises(CheckpointError, match="expected a loader state"):
        LoaderState.from_dict({"model": 1})
