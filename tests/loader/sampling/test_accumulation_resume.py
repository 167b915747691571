"""Laws of global_batch_size across saves that other laws miss: a state saved inside the last global step's padding-only
micro-steps resumes to the same batches as an uninterrupted run, and ranks that stopped apart across the epoch's end
merge into a state that delivers what each rank missed, every sample of the epoch at most once."""

from collections import Counter

import pytest
from sdl.loader.sampling.merge import merge_states
from sdl.loader.sampling.sampler import ElasticSampler


def sampler(num_samples, batch_size, rank, world_size, global_batch_size, drop_last, state=None):
    s = ElasticSampler(num_samples, batch_size, rank=rank, world_size=world_size, fingerprint="ds", seed=3,
                       global_batch_size=global_batch_size, drop_last=drop_last)
    if state is not None:
        s.load_state_dict(state)
    return s


def steps(s, count=None):
    """(ids, num_padded) of the next `count` micro-steps (None: the rest of the epoch), and the state after them."""
    it, out = iter(s), []
    for _ in range(s.plan().steps if count is None else count):
        batch = next(it)
        out.append((list(batch), batch.num_padded))
    return out, s.state_dict()


@pytest.mark.parametrize("num_samples, batch_size, world_size, global_batch_size", [(90, 2, 1, 16), (90, 4, 1, 16), (70, 2, 2, 32)])
def test_a_save_at_any_micro_step_padding_only_ones_included_resumes_to_the_same_batches(num_samples, batch_size, world_size,
                                                                                          global_batch_size):
    for rank in range(world_size):
        whole, _ = steps(sampler(num_samples, batch_size, rank, world_size, global_batch_size, False))
        for k in range(len(whole)):
            head, state = steps(sampler(num_samples, batch_size, rank, world_size, global_batch_size, False), k)
            tail, _ = steps(sampler(num_samples, batch_size, rank, world_size, global_batch_size, False, state))
            assert head + tail == whole, (rank, k)


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("stops", [(7, 8), (5, 10), (8, 3), (2, 12)])
def test_ranks_stopped_apart_with_accumulation_merge_into_every_missed_sample_once(stops, drop_last):
    num_samples, world_size, batch_size, global_batch_size = 90 if drop_last else 70, 2, 4, 32
    reference = Counter(i for rank in range(world_size) for ids, padded in
                        steps(sampler(num_samples, batch_size, rank, world_size, global_batch_size, drop_last))[0]
                        for i in ids[:len(ids) - padded])
    seen, states = Counter(), []
    for rank, stop in enumerate(stops):
        s = sampler(num_samples, batch_size, rank, world_size, global_batch_size, drop_last)
        stop = min(stop, s.plan().steps)
        done, state = steps(s, stop)
        seen.update(i for ids, padded in done for i in ids[:len(ids) - padded])
        states.append(state)
    merged = merge_states(states)
    for rank in range(world_size):
        s = sampler(num_samples, batch_size, rank, world_size, global_batch_size, drop_last, merged.to_dict())
        if s.state().epoch == 0:
            seen.update(i for ids, padded in steps(s)[0] for i in ids[:len(ids) - padded])
    assert max(seen.values()) == 1 and set(reference) <= set(seen)  # none twice, none the whole epoch holds missed
