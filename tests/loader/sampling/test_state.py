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


GOOD = LoaderState(fingerprint="abc", num_samples=10_000, seed=3, epoch=1, cursor=5000, consumed=((6000, 6100),),
                   world_size=4, batch_size=8, rank=0).to_dict()


@pytest.mark.parametrize("change, words", [
    ({"consumed": [[7000, 99999]]}, "outside"),  # was clipped to num_samples and accepted
    ({"consumed": [[6100, 6000]]}, "reversed"),  # was silently dropped
    ({"consumed": [[4000, 5500]]}, "outside"),  # starts below the cursor
    ({"consumed": [[6000, 6000]]}, "empty"),
    ({"consumed": [[6200, 6300], [6000, 6100]]}, "sorted"),
    ({"consumed": [[6000, 6100], [6100, 6200]]}, "sorted"),
    ({"consumed": [[5000, 6100]]}, "touches the cursor"),
    ({"consumed": [[6000, 6100, 6200]]}, "pair"),
    ({"consumed": [6000]}, "pair"),
    ({"consumed": "6000-6100"}, "list of"),
    ({"consumed": [[6000.0, 6100]]}, "an integer"),
    ({"cursor": True}, "'cursor' is True"),  # was taken as 1
    ({"cursor": 5000.0}, "'cursor' is 5000.0"),  # failed only at the first batch
    ({"cursor": "5000"}, "'cursor' is '5000'"),
    ({"cursor": -1}, ">= 0"),
    ({"cursor": None}, "an integer"),
    ({"epoch": -2}, ">= 0"),
    ({"num_samples": 10_000.0}, "'num_samples'"),
    ({"batch_size": 0}, ">= 1"),
    ({"block_size": False}, "'block_size'"),
    ({"seed": 1.5}, "'seed'"),
    ({"rank": 4}, "below world_size=4"),
    ({"rank": -1}, "'rank'"),
    ({"drop_last": 1}, "'drop_last'"),
    ({"fingerprint": 7}, "'fingerprint'"),
    ({"shuffle": "random"}, "'shuffle'"),
    ({"dataset": []}, "'dataset'"),
    ({"dataset": {"kind": "tokens", "seq_len": "64"}}, "'dataset.seq_len' is '64'"),  # reshard-ckpt --dataset reopens with it
    ({"dataset": {"kind": "tokens", "seq_len": 64, "stride": 0}}, "'dataset.stride' is 0 .* >= 1"),
])
def test_corrupt_fields_are_refused_with_the_field_named(change, words):
    with pytest.raises(CheckpointError, match=words.replace("[", r"\[").replace("(", r"\(")):
        LoaderState.from_dict({**GOOD, **change})


@pytest.mark.parametrize("key", [k for k in GOOD if k not in ("format", "version")])
def test_a_missing_field_is_refused_not_defaulted(key):
    with pytest.raises(CheckpointError, match=f"lacks the field.*'{key}'"):  # a missing cursor restarted the epoch
        LoaderState.from_dict({k: v for k, v in GOOD.items() if k != key})


def test_a_tensor_cursor_is_refused():
    with pytest.raises(CheckpointError, match=r"'cursor' is tensor\(5000\) \(Tensor\), expected an integer"):
        LoaderState.from_dict({**GOOD, "cursor": torch.tensor(5000)})


def test_numpy_integers_load_as_python_ints():
    state = LoaderState.from_dict({**GOOD, "seed": np.int64(3), "cursor": np.int32(5000)})
    assert state == LoaderState.from_dict(GOOD) and type(state.seed) is int and type(state.cursor) is int


_ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=5),
                       st.lists(st.integers(-5, 20_000), max_size=3), st.lists(st.lists(st.sampled_from([-1, 0, 4999, 5000, 5001, 6000, 6001, 9999, 10_000, 10_001]), max_size=3), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from([k for k in GOOD if k not in ("format", "version")]), value=_ANY_VALUE)
def test_any_field_value_is_either_kept_exactly_or_refused(key, value):
    """A corrupted field never loads as something else (True as 1, a clipped range) and never escapes as another error."""
    try:
        state = LoaderState.from_dict({**GOOD, key: value})
    except CheckpointError:
        return
    kept = state.to_dict()[key]
    assert kept == value and type(kept) is type(value)
    if key == "consumed":
        assert all(state.cursor <= a < b <= state.num_samples for a, b in state.consumed)
