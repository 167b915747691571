"""Mixture phase laws: what a saved state remembers of its sources (removed ones too), which states it refuses, and
where a state at an epoch's end resumes under other weights."""

import pytest
from sdl.loader import Mixture, make_loader
from sdl.loader.errors import CheckpointError
from sdl.loader.sampling.sampler import ElasticSampler

from tests.loader.data.test_mixture import check_passes, run

N = 240


def mix(sources, weights, **names):
    """A mixture of `weights` {name: w}, each name's dataset `sources[name]` unless `names` maps it to another."""
    return Mixture({n: sources[names.get(n, n)] for n in weights}, weights=weights, num_samples=N)


def load(mixture, state):
    sampler = ElasticSampler.for_dataset(mixture, 4, seed=5, shuffle=False)
    sampler.load_state_dict(state)
    return sampler


def test_a_removed_source_keeps_its_identity_so_its_data_comes_back_under_its_name_only(sources):
    both = mix(sources, {"web": 1, "code": 1})
    delivered, state = run(both, None, 1, 8, 5)
    alone = mix(sources, {"web": 1})
    more, state = run(alone, state, 1, 8, 2)  # code removed: the state keeps its progress and its identity
    context = state.dataset["context"]
    assert context["drawn"]["code"] == 20 and context["sources"] == {"web": sources["web"].identity, "code": sources["code"].identity}
    assert run(alone, state, 1, 8, 0)[1].dataset["context"] == context  # the same mixture again: nothing adapted
    with pytest.raises(CheckpointError, match=r"source\(s\) \['code'\] hold other data than when the state was saved"):
        load(mix(sources, {"web": 1, "code": 1}, code="math"), state)
    with pytest.raises(CheckpointError, match="'py' holds the data the state saved as 'code'.*name it 'code' again"):
        load(mix(sources, {"web": 1, "py": 1}, py="code"), state)
    # math added (a new source) while code is away, then code back with its data: every pass continues
    rest, state = run(mix(sources, {"web": 1, "math": 1}), state, 1, 8, 3)
    assert state.dataset["context"]["sources"] == {n: sources[n].identity for n in ("web", "math", "code")}
    back = mix(sources, {"web": 1, "code": 1, "math": 1})
    last, _ = run(back, state, 1, 8, 10**6)
    check_passes(back, delivered + more + rest + last)


def test_a_state_without_removed_sources_names_the_mixed_ones_only(sources):
    _, state = run(mix(sources, {"web": 1, "code": 1}), None, 1, 8, 5)
    _, state = run(mix(sources, {"code": 1, "web": 3}), state, 1, 8, 2)  # other weights, the sources reordered
    assert list(state.dataset["context"]["sources"]) == ["code", "web"]  # as before removed sources were kept


def test_a_state_of_a_mixture_with_no_source_in_common_is_refused_as_another_runs(sources):
    _, state = run(mix(sources, {"web": 3, "code": 1}), None, 1, 8, 7)
    with pytest.raises(CheckpointError, match=r"another mixture \(its sources \['code', 'web'\], this one's \['math'\]: none in "
                                              r"common\); load it with the mixture it was saved with.*at weight 0"):
        load(mix(sources, {"math": 1}), state)
    with pytest.raises(CheckpointError, match="another mixture"):  # other names and other data: no source in common either
        load(Mixture({"a": sources["math"], "b": sources["math"]}, weights={"a": 1, "b": 1}, num_samples=N), state)
    # the way the message gives: a saved source at weight 0, then dropped; the new source starts at the run's cursor
    _, state = run(mix(sources, {"web": 0, "math": 1}), state, 1, 8, 1)
    _, state = run(mix(sources, {"math": 1}), state, 1, 8, 1)
    assert (state.cursor, state.dataset["context"]["drawn"]) == (72, {"web": 42, "code": 14, "math": 8})


def epoch_samples(mixture, sampler):
    """(source, id) of every position the sampler delivers in the rest of its epoch."""
    out = []
    for batch in sampler:
        source, ids = mixture.locate(batch, seed=batch.seed, epoch=batch.epoch, context=batch.context)
        out += list(zip(source.tolist(), ids.tolist()))
    return out


def test_set_epoch_to_an_epoch_before_the_current_phase_is_refused_and_later_ones_are_the_same_however_reached(sources):
    first = mix(sources, {"web": 1, "code": 1})
    sampler = ElasticSampler.for_dataset(first, 8, seed=5, shuffle=False)
    epoch0 = epoch_samples(first, sampler)
    sampler.set_epoch(3)
    same = load(first, sampler.state())
    same.set_epoch(0)  # the same weights: epoch 0 replayed exactly
    assert epoch_samples(first, same) == epoch0
    other = mix(sources, {"web": 1, "code": 3})
    resumed = load(other, sampler.state())  # a new phase from epoch 3 on
    with pytest.raises(CheckpointError, match=r"position 0 of epoch 1 lies before the loader state's mixture phase, which "
                                              r"began at position 0 of epoch 3 .*set_epoch\(3\) or a later epoch"):
        resumed.set_epoch(1)
    resumed.set_epoch(4)
    direct = epoch_samples(other, resumed)
    resumed.set_epoch(6)
    resumed.set_epoch(4)  # back to an epoch the phase maps: the same samples
    assert epoch_samples(other, resumed) == direct
    with pytest.raises(CheckpointError, match="lies before the loader state's mixture phase"):
        other.locate([0], seed=5, epoch=2, context=resumed.state().dataset["context"])
    # a phase that began mid-epoch: that epoch's positions before it are refused too (a loader's set_epoch as well)
    loader = make_loader(other, 8, seed=5, shuffle=False, num_workers=0, rank=0, world_size=1, device="cpu")
    loader.load_state_dict(run(first, None, 1, 8, 2)[1])  # phase at position 16 of epoch 0
    list(loader)
    with pytest.raises(CheckpointError, match=r"began at position 16 of epoch 0 .*set_epoch\(1\) or a later epoch"):
        loader.set_epoch(0)


def accumulated(mixture, state, steps, shuffle):
    """`steps` micro-steps of 4 in global steps of 8 (drop_last=False); the real samples delivered and the state."""
    sampler = ElasticSampler.for_dataset(mixture, 4, seed=5, shuffle=shuffle, drop_last=False, global_batch_size=8)
    if state is not None:
        sampler.load_state_dict(state)
    delivered, steps = [], min(steps, sampler.plan().steps)
    for _, batch in zip(range(steps), sampler):
        source, ids = mixture.locate(batch, seed=batch.seed, epoch=batch.epoch, context=batch.context)
        rows = zip(batch, source.tolist(), ids.tolist())
        delivered += [(batch.epoch, k, mixture.names[s], i) for k, s, i in rows][:len(batch) - batch.num_padded]
    return delivered, sampler.state(steps)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("num_samples", [6, 10, 40])
def test_a_state_in_an_epochs_padded_last_step_resumes_under_other_weights_and_epoch_lengths(sources, shuffle, num_samples):
    first = Mixture({"web": sources["web"], "code": sources["code"]}, weights={"web": 1, "code": 1}, num_samples=10)
    delivered, state = accumulated(first, None, 3, shuffle)  # 12 slots of the 16 of two global steps: 10 real, 2 padding
    assert (state.epoch, state.cursor, state.padded) == (0, 10, 2) and len(delivered) == 10
    other = Mixture({"web": sources["web"], "code": sources["code"]}, weights={"web": 1, "code": 3}, num_samples=num_samples)
    more, after = [], state
    while after.epoch < 2:  # the rest of epoch 0 (its padding, if any), then epoch 1 at the new weights and length
        rows, after = accumulated(other, after, 10**6, shuffle)
        more += rows
    assert {e for e, _, _, _ in more} == {1} and len(more) == num_samples  # every real sample of epoch 0 was delivered
    check_passes(Mixture({"web": sources["web"], "code": sources["code"]}, num_samples=10), delivered + more)
