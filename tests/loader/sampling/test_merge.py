"""Laws of merging: ranks that stopped at different steps merge into the exact consumed set."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.errors import CheckpointError
from sdl.loader.sampling.merge import merge_states, plan_for, reshard_state
from sdl.loader.sampling.sampler import ElasticSampler


def _sampler(n, b, r, w, state=None, seed=0):
    s = ElasticSampler(n, b, rank=r, world_size=w, seed=seed, fingerprint="ds")
    if state is not None:
        s.load_state_dict(state)
    return s


@settings(max_examples=80, deadline=None)
@given(n=st.integers(10, 500), w=st.integers(1, 5), b=st.integers(1, 8), w2=st.integers(1, 5), b2=st.integers(1, 8), data=st.data())
def test_uneven_stop_merges_exactly(n, w, b, w2, b2, data):
    samplers = [_sampler(n, b, r, w) for r in range(w)]
    steps_total = len(samplers[0])
    seen, states = [], []
    for s in samplers:  # each rank stops after its own number of steps
        steps = data.draw(st.integers(0, steps_total))
        it = iter(s)
        for _ in range(steps):
            seen.extend(next(it))
        states.append(s.state_dict() if steps < steps_total else None)
    if any(state is None for state in states):
        return  # a rank that finished moved to the next epoch: refused by design, covered below
    merged = merge_states(states)
    assert merged.num_consumed == len(seen)
    for s in [_sampler(n, b2, r, w2, merged.to_dict()) for r in range(w2)]:
        for batch in s:
            seen.extend(batch)
    assert len(seen) == len(set(seen))
    assert n - len(seen) < w2 * b2  # everything but the final partial global batch


def test_states_from_different_runs_or_epochs_or_missing_ranks_are_refused():
    a = _sampler(100, 4, 0, 2).state_dict()
    other_seed = _sampler(100, 4, 0, 2, seed=1).state_dict()
    with pytest.raises(CheckpointError, match="seed"):
        merge_states([a, other_seed])
    behind, ahead = _sampler(100, 4, 0, 3), _sampler(100, 4, 1, 3)
    next(iter(ahead))
    with pytest.raises(CheckpointError, match=r"missing rank\(s\) \[2\]"):
        merge_states([behind.state_dict(), ahead.state_dict()])
    with pytest.raises(CheckpointError, match="different epochs"):
        merge_states([a, a | {"epoch": 1}])


def test_reshard_records_the_new_topology_and_plans_it():
    state = reshard_state(_sampler(100, 4, 0, 2).state_dict(), world_size=3, batch_size=5)
    assert (state.world_size, state.batch_size, state.rank) == (3, 5, None)
    assert plan_for(state, 3, 5).to_dict() == {"steps": 6, "samples": 90, "dropped": 10, "padded": 0}
