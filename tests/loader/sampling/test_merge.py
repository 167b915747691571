"""Laws of merging: ranks that stopped at different steps merge into the exact consumed set."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.sampling.merge import merge_states, plan_for, reshard_state
from sdl.loader.sampling.sampler import ElasticSampler


def _sampler(n, b, r, w, state=None, seed=0):
    s = ElasticSampler(n, b, rank=r, world_size=w, seed=seed, fingerprint="ds")
    if state is not None:
        s.load_state_dict(state)
    return s


@settings(max_examples=80, deadline=None)
@given(n=st.integers(40, 500), w=st.integers(1, 5), b=st.integers(1, 8), w2=st.integers(1, 5), b2=st.integers(1, 8), data=st.data())
def test_uneven_stop_merges_exactly(n, w, b, w2, b2, data):
    samplers = [_sampler(n, b, r, w) for r in range(w)]
    steps_total = len(samplers[0])
    seen, states = [], []
    for s in samplers:  # each rank stops after its own number of steps
        steps = data.draw(st.integers(0, steps_total))
        it = iter(s)
        for _ in range(steps):
            seen.extend(next(it))
        states.append(s.state_dict())  # a rank that ran every step saved the next epoch at cursor 0
    merged = merge_states(states)
    if merged.epoch == 1:  # every rank ran the whole epoch
        assert len(seen) == len(set(seen)) and n - len(seen) < w * b
        return
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
    last = _sampler(100, 4, 2, 3)
    with pytest.raises(CheckpointError, match=r"rank\(s\) \[1\] given twice, at different steps"):
        merge_states([behind.state_dict(), ahead.state_dict(), last.state_dict(), _sampler(100, 4, 1, 3).state_dict()])
    with pytest.raises(CheckpointError, match="different epochs"):
        merge_states([a, a | {"epoch": 2, "rank": 1}])
    with pytest.raises(CheckpointError, match=r"different epochs \(0 and 1, at sample 8\)"):
        merge_states([a, a | {"epoch": 1, "cursor": 8, "rank": 1}])
    rewritten = reshard_state(a, world_size=2, global_batch_size=16)  # a run's rank file beside one rewritten for another G
    with pytest.raises(CheckpointError, match=r"different global_batch_size \(\['16', 'None'\]\)"):
        merge_states([a, rewritten.to_dict() | {"rank": 1}])


def test_reshard_records_the_new_topology_and_plans_it():
    state = reshard_state(_sampler(100, 4, 0, 2).state_dict(), world_size=3, batch_size=5)
    assert (state.world_size, state.batch_size, state.rank) == (3, 5, None)
    assert plan_for(state, 3, 5).to_dict() == {"steps": 6, "samples": 90, "dropped": 10, "padded": 0}


def test_reshard_for_another_global_batch_records_it_and_counts_padding_as_its_sampler_does():
    saver = ElasticSampler(30, 1, fingerprint="ds", drop_last=False, global_batch_size=8)  # 4 global steps: 30 + 2 padding
    it = iter(saver)
    for _ in range(31):
        next(it)
    state = saver.state()  # every sample delivered, 1 padding slot of the last global step too
    assert (state.cursor, state.padded, state.global_batch_size) == (30, 1, 8)
    same = reshard_state(state, world_size=1)
    assert (same.global_batch_size, same.padded) == (8, 1) and plan_for(same, 1, 1, global_batch_size=8).steps == 1
    other = reshard_state(state, world_size=1, global_batch_size=4)  # its padding was G=8's: a G=4 sampler counts none
    assert (other.global_batch_size, other.padded) == (4, 0)
    resumed = ElasticSampler(30, 1, fingerprint="ds", drop_last=False, global_batch_size=4)
    resumed.load_state_dict(other)
    assert plan_for(other, 1, 1, global_batch_size=4) == plan_for(state, 1, 1, global_batch_size=4) == resumed.plan()
    assert resumed.plan().steps == len(list(resumed)) == 2  # 8 global steps of 4, the last two slots padding
    with pytest.raises(ConfigError, match="target global_batch_size is 0, expected a positive integer"):
        reshard_state(state, world_size=1, global_batch_size=0)


def _real(batch):
    return list(batch)[:len(batch) - batch.num_padded]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(24, 300), w=st.integers(1, 4), b=st.integers(1, 6), w2=st.integers(1, 4), b2=st.integers(1, 6),
       drop_last=st.booleans(), data=st.data())
def test_uneven_stop_at_an_epoch_boundary_is_exactly_once(n, w, b, w2, b2, drop_last, data):
    """Ranks stop 0–2 steps before the end of epoch 1 (0: they ran the last step and saved epoch 2 at cursor 0);
    merged and resumed on another world size, epoch 1 is delivered exactly once, then epoch 2 whole."""
    def sampler(rank, world, batch, state):
        s = ElasticSampler(n, batch, rank=rank, world_size=world, seed=3, fingerprint="ds", drop_last=drop_last)
        s.load_state_dict(state)
        return s

    start = ElasticSampler(n, b, fingerprint="ds", seed=3, drop_last=drop_last).state().next_epoch(1).to_dict()
    seen, states = [], []
    for rank in range(w):
        s = sampler(rank, w, b, start)
        steps = max(0, len(s) - data.draw(st.integers(0, 2), label=f"steps short, rank {rank}"))
        batches = iter(s)
        for _ in range(steps):
            seen += _real(next(batches))
        states.append(s.state_dict())
    merged = merge_states(states)
    assert merged.epoch == (2 if all(st["epoch"] == 2 for st in states) else 1)
    assert merged.num_consumed == (0 if merged.epoch == 2 else len(seen))
    resumed = [sampler(rank, w2, b2, merged.to_dict()) for rank in range(w2)]
    if merged.epoch == 1:
        for s in resumed:
            seen += [i for batch in s for i in _real(batch) if batch.epoch == 1]
    assert len(seen) == len(set(seen)), "a sample of epoch 1 was delivered twice"
    assert n - len(seen) < (max(w * b, w2 * b2) if drop_last else 1)
    epoch2 = [(batch.epoch, i) for s in resumed for batch in s for i in _real(batch)]
    assert {e for e, _ in epoch2} <= {2} and len(epoch2) == len(set(epoch2))
    assert n - len(epoch2) < (w2 * b2 if drop_last else 1)
