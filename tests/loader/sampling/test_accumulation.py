"""Laws of global_batch_size (gradient accumulation): the same G gives the same global batches on any topology,
across the epoch boundary and across resumes mid-accumulation; len() is the whole epoch; set_epoch never drops data."""

import pytest
from sdl.loader.errors import ConfigError
from sdl.loader.sampling.sampler import ElasticSampler

N, G = 30, 8  # 30 samples: 3 global steps of 8 per epoch, 6 dropped


def _ranks(world_size, batch_size, state=None, **kw):
    samplers = [ElasticSampler(N, batch_size, rank=r, world_size=world_size, fingerprint="ds", seed=5, **kw) for r in range(world_size)]
    for sampler in samplers:
        if state is not None:
            sampler.load_state_dict(state)
    return samplers


def _global_batches(samplers, micro_steps=None):
    """Run every rank `micro_steps` micro-steps (None: to the end of the epoch); group them into global steps."""
    accumulate = samplers[0].accumulation_steps
    its = [iter(s) for s in samplers]
    micro = [[x for it in its for x in next(it)] for _ in range(samplers[0].plan().steps if micro_steps is None else micro_steps)]
    return [sorted(sum(micro[k:k + accumulate], [])) for k in range(0, len(micro), accumulate)], samplers[0].state_dict()


@pytest.mark.parametrize("world_size,batch_size", [(1, 4), (1, 2), (4, 1), (2, 2)])
def test_same_global_batch_size_same_global_batches_for_two_epochs(world_size, batch_size):
    reference = _ranks(2, 4, global_batch_size=G)  # 2 ranks x 4, no accumulation
    other = _ranks(world_size, batch_size, global_batch_size=G)  # e.g. 1 rank x 4 x 2 micro-steps
    assert len(other[0]) == (N // G) * G // (world_size * batch_size)  # micro-batches of a whole epoch
    for epoch in range(2):
        expected, state = _global_batches(reference)
        got, other_state = _global_batches(other)
        assert got == expected and len(got) == N // G
        assert state["epoch"] == other_state["epoch"] == epoch + 1


def test_without_global_batch_size_the_epoch_boundary_differs():
    """What G fixes: 1x4 steps of 4 keep the 28 samples a 2x4 run drops only 24 of 30 on, so epochs differ."""
    assert len(_ranks(1, 4)[0]) * 4 != len(_ranks(2, 4)[0]) * 8


@pytest.mark.parametrize("resume_on", [(1, 4), (1, 2), (2, 1)])
def test_resume_mid_accumulation_continues_the_same_global_batches(resume_on):
    expected, _ = _global_batches(_ranks(2, 4, global_batch_size=G))
    (first,) = _ranks(1, 4, global_batch_size=G)
    it = iter(first)
    head = [x for _ in range(3) for x in next(it)]  # a global step and a half: 3 micro-steps of 4
    resumed = _ranks(*resume_on, first.state_dict(), global_batch_size=G)
    its = [iter(s) for s in resumed]
    rest = [x for _ in range(resumed[0].plan().steps) for it in its for x in next(it)]
    flat = head + rest
    assert [sorted(flat[k:k + G]) for k in range(0, len(flat), G)] == expected
    assert resumed[0].state().epoch == 1


def test_a_state_off_this_topologys_micro_step_boundary_is_refused():
    first = _ranks(1, 4, global_batch_size=G)
    next(iter(first[0]))
    with pytest.raises(ConfigError, match="micro-step boundary"):
        _ranks(2, 4, first[0].state_dict(), global_batch_size=G)[0].plan()


def test_global_batch_size_must_be_a_multiple_of_the_micro_batch():
    with pytest.raises(ConfigError, match="multiple of world_size × batch_size"):
        ElasticSampler(N, 4, world_size=3, rank=0, global_batch_size=8)


def test_padding_completes_the_last_global_step_and_survives_a_resume():
    (whole,) = _ranks(1, 2, drop_last=False, global_batch_size=G)
    batches = [list(b) for b in whole]
    assert len(batches) == 16 and whole.plan_from(whole.state(0)).to_dict() == {"steps": 16, "samples": 30, "dropped": 0, "padded": 2}
    (first,) = _ranks(1, 2, drop_last=False, global_batch_size=G)
    it = iter(first)
    head = [list(next(it)) for _ in range(15)]  # the 16th micro-step is padding only
    (resumed,) = _ranks(1, 2, first.state_dict(), drop_last=False, global_batch_size=G)
    assert len([list(b) for b in resumed]) == 1 and resumed.state().epoch == 1
    assert head == batches[:15]


def test_len_is_the_whole_epoch_and_plan_the_rest():
    (sampler,) = _ranks(1, 4, global_batch_size=G)
    it = iter(sampler)
    for _ in range(3):
        next(it)
    assert len(sampler) == 6
    (resumed,) = _ranks(1, 4, sampler.state_dict(), global_batch_size=G)
    assert len(resumed) == 6 and resumed.plan().steps == 3


def test_set_epoch_refuses_to_drop_the_epoch_in_progress():
    (sampler,) = _ranks(1, 4)
    it = iter(sampler)
    next(it)
    state = sampler.state_dict()
    (resumed,) = _ranks(1, 4, state)
    resumed.set_epoch(0)  # the epoch in progress continues
    assert resumed.plan().steps == len(resumed) - 1
    with pytest.raises(ConfigError, match=r"set_epoch\(2\) while epoch 0 is in progress .* skip_rest=True"):
        resumed.set_epoch(2)
    with pytest.raises(ConfigError, match=r"skip_rest='no'\): expected True or False"):  # a truthy string drops nothing
        resumed.set_epoch(2, skip_rest="no")
    assert resumed.state().epoch == 0
    resumed.set_epoch(2, skip_rest=True)
    assert resumed.state().epoch == 2 and resumed.plan().steps == len(resumed)
    (fresh,) = _ranks(1, 4)
    fresh.set_epoch(3)  # nothing of epoch 0 was delivered: starting epoch 3 drops nothing
    assert fresh.state().epoch == 3


def test_micro_steps_of_a_global_step_share_its_identity_on_any_topology():
    """shift="random" draws one shift per batch from (seed, epoch, position): with G, a global step's micro-batches
    carry the same position on every topology and after a resume mid-accumulation, so a global batch gets one shift."""
    def positions(samplers, micro_steps):
        its = [iter(s) for s in samplers]
        return [sorted({next(it).position for it in its}) for _ in range(micro_steps)]

    assert positions(_ranks(2, 4, global_batch_size=G), 3) == [[0], [8], [16]]
    (first,) = _ranks(1, 4, global_batch_size=G)
    assert positions([first], 3) == [[0], [0], [8]]
    assert positions(_ranks(1, 4, first.state_dict(), global_batch_size=G), 3) == [[8], [16], [16]]


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("resume_on", [(1, 4), (1, 2), (2, 1), (4, 2)])
def test_the_reshard_plan_with_global_batch_size_is_what_the_ranks_then_deliver(resume_on, drop_last):
    """`plan_for(..., global_batch_size=G)` (what `sdl reshard-ckpt --global-batch-size` shows) counts the micro-steps,
    real and padded samples each new rank really gets; without G it would plan steps of W·B from the cursor."""
    from sdl.loader.sampling.merge import plan_for
    from sdl.loader.sampling.slicing import rank_real_samples

    (first,) = _ranks(1, 4, drop_last=drop_last, global_batch_size=G)
    it = iter(first)
    for _ in range(2):
        next(it)
    state = first.state_dict()
    world_size, batch_size = resume_on
    plan = plan_for(state, world_size, batch_size, global_batch_size=G)
    resumed = _ranks(world_size, batch_size, state, drop_last=drop_last, global_batch_size=G)
    for rank, sampler in enumerate(resumed):
        batches = list(sampler)
        real = sum(len(b) - b.num_padded for b in batches)
        assert len(batches) == plan.steps
        assert real == rank_real_samples(plan.samples, plan.steps, rank, world_size, batch_size)
    assert plan.samples + plan.dropped == first.state().remaining


def test_a_global_batch_size_the_topology_cannot_make_is_refused_by_the_plan():
    from sdl.loader.sampling.merge import plan_for

    (first,) = _ranks(1, 4, global_batch_size=G)
    with pytest.raises(ConfigError, match="global_batch_size is 8, expected a positive multiple of world_size × batch_size = 12"):
        plan_for(first.state_dict(), 3, 4, global_batch_size=G)
