"""Laws of ElasticSampler: exactly once across resumes that change world size and batch size; same global
batch size gives the same global batches; the tail is dropped or padded and reported."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.sampling.sampler import ElasticSampler


def _ranks(n, batch_size, world_size, state=None, **kw):
    samplers = [ElasticSampler(n, batch_size, rank=r, world_size=world_size, fingerprint="ds", **kw) for r in range(world_size)]
    if state is not None:
        for s in samplers:
            s.load_state_dict(state)
    return samplers


def _run(samplers, steps):
    """Run `steps` global steps on every rank (None: to the end); return the ids and the saved state."""
    seen = []
    iterators = [iter(s) for s in samplers]
    for _ in range(samplers[0].plan().steps if steps is None else min(steps, samplers[0].plan().steps)):
        for it in iterators:
            seen.extend(next(it))
    state = samplers[0].state_dict()
    assert all(s.state_dict() | {"rank": 0} == state | {"rank": 0} for s in samplers)  # ranks agree
    return seen, state


@settings(max_examples=80, deadline=None)
@given(n=st.integers(45, 400), seed=st.integers(0, 1000), shuffle=st.sampled_from([True, False, "locality"]),
       segments=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 9), st.integers(0, 6)), min_size=1, max_size=5))
def test_exactly_once_across_resumes_with_any_topology(n, seed, shuffle, segments):
    state, seen = None, []
    for world_size, batch_size, steps in segments:
        ids, state = _run(_ranks(n, batch_size, world_size, state, seed=seed, shuffle=shuffle, block_size=8), steps)
        seen += ids
        if state["epoch"] == 1:
            break
    if state["epoch"] == 0:  # finish the epoch with the last topology
        world_size, batch_size, _ = segments[-1]
        ids, state = _run(_ranks(n, batch_size, world_size, state, seed=seed, shuffle=shuffle, block_size=8), None)
        seen += ids
        dropped = n - len(seen)
        assert 0 <= dropped < world_size * batch_size  # only the final partial global batch is dropped
    assert len(seen) == len(set(seen)) and set(seen) <= set(range(n))
    assert state["epoch"] == 1 and state["cursor"] == 0


@pytest.mark.parametrize("topologies", [[(8, 1), (2, 4), (4, 2), (1, 8)]])
def test_same_global_batch_size_gives_same_global_batches(topologies):
    def global_batches(world_size, batch_size):
        samplers = _ranks(1000, batch_size, world_size, seed=3)
        per_rank = [list(s) for s in samplers]
        return [sorted(x for r in range(world_size) for x in per_rank[r][g]) for g in range(len(per_rank[0]))]

    reference = global_batches(*topologies[0])
    for world_size, batch_size in topologies[1:]:
        assert global_batches(world_size, batch_size) == reference


def test_padding_wraps_and_is_reported():
    samplers = _ranks(10, 2, 2, drop_last=False)
    assert samplers[0].plan().to_dict() == {"steps": 3, "samples": 10, "dropped": 0, "padded": 2}
    batches = [b for s in samplers for b in s]
    ids = [x for b in batches for x in b]
    assert set(ids) == set(range(10)) and len(ids) == 12
    assert sum(b.num_padded for b in batches) == 2
    dropping = _ranks(10, 2, 2, drop_last=True)
    assert dropping[0].plan().to_dict() == {"steps": 2, "samples": 8, "dropped": 2, "padded": 0}


def test_epoch_rolls_over_and_set_epoch_keeps_the_epoch_in_progress():
    (sampler,) = _ranks(20, 4, 1, seed=1)
    first = [list(b) for b in sampler]
    assert sampler.state().epoch == 1
    second = [list(b) for b in sampler]
    assert first != second and sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(20))
    (resumed,) = _ranks(20, 4, 1, seed=1)
    it = iter(resumed)
    next(it)
    state = resumed.state_dict()
    (again,) = _ranks(20, 4, 1, state, seed=1)
    again.set_epoch(0)  # the epoch in progress: continue, do not restart
    assert len(list(again)) == 4


def test_batches_carry_step_identity_for_per_batch_randomness():
    a, b = _ranks(100, 4, 2, seed=2)
    ba, bb = next(iter(a)), next(iter(b))
    assert (ba.seed, ba.epoch, ba.position) == (bb.seed, bb.epoch, bb.position) == (2, 0, 0)
    import pickle

    assert pickle.loads(pickle.dumps(ba)).position == ba.position


@pytest.mark.parametrize("world_size,drop_last,shuffle", [(1, False, True), (3, True, "locality"), (2, False, False)])
def test_each_batch_is_a_row_of_the_chunk_it_was_computed_in(world_size, drop_last, shuffle):
    """A dataset may prepare a whole chunk of steps from `batch.chunk.ids` (TokenWindows locates them at once): each
    batch's ids must be exactly its row, resumed mid-epoch, padded or not; the chunk does not travel to workers."""
    import pickle

    samplers = _ranks(20_000, 7, world_size, shuffle=shuffle, drop_last=drop_last)
    _, state = _run(samplers, 100)
    chunks = {}
    for sampler in _ranks(20_000, 7, world_size, state=state, shuffle=shuffle, drop_last=drop_last):
        for batch in sampler:
            assert batch.chunk.ids.dtype == np.int64 and batch.chunk.ids[batch.step].tolist() == list(batch)
            chunks[id(batch.chunk)] = batch.chunk
    assert len(chunks) > world_size  # several chunks per rank: a lookup covers 4,096 // 7 steps
    assert pickle.loads(pickle.dumps(batch)).chunk is None


def test_a_state_from_another_dataset_or_seed_is_refused():
    (sampler,) = _ranks(100, 4, 1, seed=0)
    other = ElasticSampler(100, 4, fingerprint="other-dataset").state_dict()
    with pytest.raises(CheckpointError, match="another dataset"):
        sampler.load_state_dict(other)
    with pytest.raises(CheckpointError, match="seed=1"):
        sampler.load_state_dict(ElasticSampler(100, 4, seed=1, fingerprint="ds").state_dict())


@pytest.mark.parametrize("n, batch_size, world_size", [(10, 11, 1), (10, 1, 11), (10, 4, 3)])
def test_a_global_batch_larger_than_the_dataset_is_refused_under_drop_last(n, batch_size, world_size):
    """It would deliver zero batches every epoch, silently (len 0)."""
    with pytest.raises(ConfigError, match=rf"a global batch of {batch_size * world_size} samples \({world_size} rank\(s\) × "
                                          rf"batch_size {batch_size}\) is larger than the dataset's {n} samples.*drop_last=False"):
        ElasticSampler(n, batch_size, rank=0, world_size=world_size)
    padded = _ranks(n, batch_size, world_size, drop_last=False)  # allowed: one padded step
    assert len(padded[0]) == 1 and sorted(x for s in padded for b in s for x in b[:len(b) - b.num_padded]) == list(range(n))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(45, 3000), seed=st.integers(0, 1000), shuffle=st.sampled_from([True, False, "locality"]),
       world_size=st.integers(1, 4), batch_size=st.integers(1, 9), drop_last=st.booleans(), done=st.integers(0, 20),
       accumulate=st.sampled_from([None, 2]))
def test_id_chunks_are_the_batches_iter_yields(n, seed, shuffle, world_size, batch_size, drop_last, done, accumulate):
    """The storage prefetcher reads the order as arrays (id_chunks): the same ids, steps and padding as the batches."""
    import numpy as np

    G = None if accumulate is None else accumulate * world_size * batch_size
    if G is not None and drop_last and G > n:
        return
    kw = {"seed": seed, "shuffle": shuffle, "block_size": 8, "window_blocks": 3, "drop_last": drop_last, "global_batch_size": G}
    first = _ranks(n, batch_size, world_size, **kw)
    _, state = _run(first, done)  # resumed part-way, as the loader's copy of the sampler is
    for sampler in _ranks(n, batch_size, world_size, state, **kw):
        chunks = list(sampler.id_chunks())
        batches = [list(batch) for batch in sampler]
        ids = np.concatenate(chunks) if chunks else np.empty((0, batch_size), dtype=np.int64)
        assert ids.dtype == np.int64 and ids.tolist() == batches
