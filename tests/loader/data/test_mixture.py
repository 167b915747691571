"""Mixture laws: per-source exactly once per pass across resumes, reshards and weight changes; content; determinism."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sdl.loader import Mixture, TokenWindows, make_loader
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.sampling.interleave import Interleave
from sdl.loader.sampling.merge import merge_states
from sdl.loader.sampling.order import Order
from sdl.loader.sampling.sampler import ElasticSampler

N = 240  # positions per epoch
TOPOLOGIES = st.tuples(st.sampled_from([1, 2, 3, 4]), st.sampled_from([1, 2, 5]), st.integers(1, 40))


def run(mixture, state, world_size, batch_size, steps, seed=5, shuffle=False):
    """`steps` global steps (or to the epoch's end) on every rank; the delivered (epoch, position, source name, id)
    and the state after them."""
    samplers = [ElasticSampler.for_dataset(mixture, batch_size, seed=seed, shuffle=shuffle, rank=r, world_size=world_size,
                                           drop_last=False) for r in range(world_size)]
    for sampler in samplers:
        if state is not None:
            sampler.load_state_dict(state)
    steps = min(steps, samplers[0].plan().steps)  # the rest of the epoch (len() is a whole epoch)
    delivered = []
    for sampler in samplers:
        for _, batch in zip(range(steps), sampler):
            source, ids = mixture.locate(batch, seed=batch.seed, epoch=batch.epoch, context=batch.context)
            real = len(batch) - batch.num_padded  # the epoch's last step is padded with repeats of its start
            delivered += [(batch.epoch, k, mixture.names[s], i) for k, s, i in zip(batch, source.tolist(), ids.tolist())][:real]
    return delivered, samplers[0].state(steps)


def check_passes(mixture, delivered, seed=5):
    """Each position of each epoch once; per source, its draws in stream order are its passes: each a permutation
    (every id once), a new one each pass, nothing skipped (the source's own Feistel order from its first draw)."""
    keys = sorted((e, k) for e, k, _, _ in delivered)
    assert len(keys) == len(set(keys))
    for name, source in mixture_sources(mixture).items():
        ids = [i for _, _, n, i in sorted(delivered) if n == name]
        size = len(source)
        passes = [ids[p:p + size] for p in range(0, len(ids), size)]
        assert all(len(set(block)) == len(block) for block in passes)
        assert all(sorted(block) == list(range(size)) for block in passes[:-1])
        key = f"mixture-source:{name}:{source.identity}"
        expected = [int(Order(num_samples=size, seed=seed, epoch=j // size, key=key)[j % size]) for j in range(len(ids))]
        assert ids == expected


def mixture_sources(mixture):
    return dict(zip(mixture.names, mixture.sources))


@settings(max_examples=15, deadline=None)
@given(st.lists(TOPOLOGIES, min_size=1, max_size=6))
def test_every_source_exactly_once_per_pass_across_resumes_and_reshards(sources, segments):
    mixture = Mixture({"web": sources["web"], "code": sources["code"]}, weights={"web": 0.5, "code": 0.5}, num_samples=N)
    delivered, state = [], None
    for world_size, batch_size, steps in segments + [(2, 4, 10**6), (3, 5, 10**6)]:  # then to the end of two epochs
        more, state = run(mixture, state, world_size, batch_size, steps)
        delivered += more
    check_passes(mixture, delivered)
    assert len(sources["code"]) < N // 2  # the code source was upsampled: it ran more than one pass


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(TOPOLOGIES, st.sets(st.sampled_from(["web", "code", "math"]), min_size=1),
                          st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3)), min_size=1, max_size=5))
@example([((1, 1, 1), {"web"}, [1.0, 1.0, 1.0]), ((1, 1, 1), {"code"}, [1.0, 1.0, 1.0])])  # every source swapped
def test_weights_and_sources_changed_at_random_steps_continue_every_pass(sources, segments):
    delivered, state, mixture = [], None, None
    for (world_size, batch_size, steps), names, weights in segments + [((1, 8, 10**6), {"web", "code", "math"}, [1, 1, 1])]:
        weights = dict(zip(sorted(names), weights))
        if mixture is not None and not set(mixture.names) & names:  # every source swapped: one saved source stays named,
            weights[mixture.names[0]] = 0.0  # at weight 0 (a state with no source in common is another run's: refused)
        mixture = Mixture({n: sources[n] for n in sorted(weights)}, weights=weights, num_samples=N)
        more, state = run(mixture, state, world_size, batch_size, steps)
        delivered += more
    check_passes(Mixture(sources, num_samples=N), delivered)


SIX = ("a", "b", "c", "d", "e", "f")  # six names over the three datasets: the Pfair table wherever the tree's bound passes 2


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(TOPOLOGIES, st.lists(st.integers(0, 40), min_size=6, max_size=6).filter(any)),
                min_size=1, max_size=4))
def test_six_sources_at_changing_integer_weights_continue_every_pass(sources, segments):
    six = {name: sources[("web", "code", "math")[i % 3]] for i, name in enumerate(SIX)}
    delivered, state = [], None
    for (world_size, batch_size, steps), shares in segments + [((1, 8, 10**6), [1] * 6)]:
        mixture = Mixture(six, weights=dict(zip(SIX, shares)), num_samples=N)
        more, state = run(mixture, state, world_size, batch_size, steps)
        delivered += more
    check_passes(mixture, delivered)


def test_many_sources_keep_two_over_every_window_and_every_pass_across_weight_changes(sources):
    five = {"a": sources["web"], "b": sources["code"], "c": sources["math"], "d": sources["code"], "e": sources["math"]}
    skewed = Mixture(five, weights=dict(zip(five, (0.857, 0.001, 0.094, 0.001, 0.049))), num_samples=N)  # tree bound 2.3
    context = skewed.describe()["context"]
    assert context["mixture"] == 3 and context["interleave"] == 2 and skewed.describe()["window_bound"] == 2
    stream, _ = skewed.stream.locate(np.arange(2000))  # the first 2,000 positions of the stream (8 epochs)
    counts = np.cumsum(np.eye(5, dtype=np.int64)[stream], axis=0)
    error = np.vstack([np.zeros(5), counts]) - np.arange(2001)[:, None] * np.asarray(list(skewed.weights.values()))
    assert (error.max(axis=0) - error.min(axis=0)).max() < 2  # every window within 2 (the tree: 2.05)
    source, _ = skewed.locate(np.arange(N))
    # a table phase, a tree phase (equal weights), the table again: every source exactly once per pass
    delivered, state = run(skewed, None, 2, 3, 17)
    more, state = run(Mixture(five, weights=dict.fromkeys(five, 1), num_samples=N), state, 3, 2, 20)
    rest, _ = run(skewed, state, 1, 5, 10**6)
    check_passes(skewed, delivered + more + rest)
    # a phase written before the table (no "interleave": version 1) is read with the tree, as it was written
    old = {k: v for k, v in context.items() if k != "interleave"} | {"mixture": 1}
    tree, _ = Interleave(weights=tuple(skewed.weights.values())).locate(np.arange(N))
    assert skewed.locate(np.arange(N), context=old)[0].tolist() == tree.tolist() != source.tolist()
    with pytest.raises(CheckpointError, match="malformed mixture phase"):
        skewed.locate([0], context=context | {"interleave": 7})


def test_same_seed_same_stream_on_any_topology(sources):
    mixture = Mixture({"web": sources["web"], "code": sources["code"]}, weights={"web": 3, "code": 1}, num_samples=N)
    streams = [sorted(run(mixture, None, w, b, 10**6)[0]) for w, b in ((1, 24), (3, 8), (4, 6))]
    assert streams[0] == streams[1] == streams[2] and len(streams[0]) == N
    assert sorted(run(mixture, None, 1, 24, 10**6, seed=6)[0]) != streams[0]


def test_batches_hold_the_sources_samples_in_the_weights_proportions(sources):
    mixture = Mixture({"web": sources["web"], "code": sources["code"]}, weights={"web": 0.75, "code": 0.25})
    loader = make_loader(mixture, 8, shuffle=False, num_workers=0, rank=0, world_size=1, device="cpu")
    for step, batch in enumerate(loader):
        assert batch["sample_ids"].tolist() == list(range(step * 8, step * 8 + 8))
        assert abs(int((batch["source"] == 1).sum()) - 2) <= 2
        for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
            expected = mixture.sources[s][i]
            assert torch.equal(batch["input_ids"][row], expected["input_ids"]) and torch.equal(batch["labels"][row], expected["labels"])
    assert step + 1 == len(mixture) // 8
    plan = make_loader(mixture, 8, shuffle=False, num_workers=0, rank=0, world_size=1, device="cpu").plan()
    assert plan.sources["web"]["passes_to_epoch_end"] <= 1 and plan.sources["code"]["draws_to_epoch_end"] > 0
    assert max(p["passes_to_epoch_end"] for p in plan.sources.values()) == 1.0  # num_samples=None: one pass of the first out


def test_workers_and_resume_under_new_weights_deliver_the_same_stream(sources):
    mixture = Mixture({"web": sources["web"], "code": sources["code"]}, weights={"web": 1, "code": 1}, num_samples=N)
    loader = make_loader(mixture, 6, shuffle=False, num_workers=2, rank=0, world_size=1, device="cpu", seed=5)
    seen = []
    for _, batch in zip(range(7), loader):
        seen += list(zip(batch["sample_ids"].tolist(), batch["source"].tolist(), batch["source_ids"].tolist()))
    state = loader.state_dict()
    assert state["cursor"] == 42 and state["dataset"]["context"]["drawn"] == {"web": 0, "code": 0}
    other = Mixture({"code": sources["code"], "web": sources["web"]}, weights={"code": 1, "web": 3}, num_samples=N)
    resumed = make_loader(other, 6, shuffle=False, num_workers=2, rank=0, world_size=1, device="cpu", seed=5)
    resumed.load_state_dict(state)
    assert resumed.state_dict()["dataset"]["context"]["drawn"] == {"code": 21, "web": 21}
    after = [(0, k, other.names[s], i) for batch in resumed
             for k, s, i in zip(batch["sample_ids"].tolist(), batch["source"].tolist(), batch["source_ids"].tolist())]
    check_passes(other, [(0, k, mixture.names[s], i) for k, s, i in seen] + after)


def test_refusals_say_what_to_do(sources, tmp_path):
    with pytest.raises(ConfigError, match="mixture source 'code' is NoneType .or empty.; expected an sdl dataset"):
        Mixture({"web": sources["web"], "code": None})
    with pytest.raises(ConfigError, match=r"rename names source\(s\) \['cdoe'\] the mixture does not have"):
        Mixture({"web": sources["web"], "code": sources["code"]}, rename={"cdoe": {"text": "content"}})
    with pytest.raises(ConfigError, match="different fields.*seq_len"):
        Mixture({"web": sources["web"], "short": TokenWindows(sources["code"].path, seq_len=4)})
    with pytest.raises(ConfigError, match="one weight per source"):
        Mixture({"web": sources["web"]}, weights={"wbe": 1.0})
    with pytest.raises(ConfigError, match=r"^mixture source name 1 \(int\) is not a string; .*name it '1' or"):
        Mixture({1: sources["web"], "1": sources["code"]})  # was an IndexError: both read as "1"
    for num_samples in (2**62, np.uint64(2**63)):  # were accepted, then blamed on a corrupt checkpoint (or an OverflowError)
        with pytest.raises(ConfigError, match=f"num_samples is {int(num_samples):,}, expected a positive integer below 2\\*\\*62"):
            Mixture({"web": sources["web"]}, num_samples=num_samples)
    huge = {name: Mixture({name: sources[name]}, num_samples=2**62 - 1) for name in ("web", "code")}
    with pytest.raises(ConfigError, match=r"^one pass of the mixture's first source to run out is [0-9,]+ positions, not below 2\*\*62"):
        Mixture(huge)  # was accepted, then blamed on a corrupt checkpoint
    mixture = Mixture({"web": sources["web"], "code": sources["code"]}, num_samples=N)
    ranks = [ElasticSampler.for_dataset(mixture, 2, shuffle=False, rank=r, world_size=2) for r in range(2)]
    states = [ranks[0].state(3), ranks[1].state(5)]  # uneven stops
    other = ElasticSampler.for_dataset(Mixture({"web": sources["web"], "code": sources["code"]}, weights={"web": 1, "code": 2},
                                               num_samples=N), 2, shuffle=False)
    with pytest.raises(CheckpointError, match="stopped at different steps.*resume with the saved weights"):
        other.load_state_dict(merge_states(states))
    shuffled = ElasticSampler.for_dataset(mixture, 2, shuffle=True).state(4)
    shuffled_other = ElasticSampler.for_dataset(Mixture({"web": sources["web"]}), 2, shuffle=True)
    with pytest.raises(CheckpointError, match="shuffle='global'.*change weights at an epoch start"):
        shuffled_other.load_state_dict(shuffled)
    renamed = Mixture({"web": sources["code"], "code": sources["web"]}, num_samples=N)
    with pytest.raises(CheckpointError, match="hold other data"):
        ElasticSampler.for_dataset(renamed, 2, shuffle=False).load_state_dict(ranks[0].state(3))
    moved = Mixture({"web": sources["web"], "py": sources["code"]}, num_samples=N)  # the same data under a new name
    with pytest.raises(CheckpointError, match="'py' holds the data the state saved as 'code'.*name it 'code' again"):
        ElasticSampler.for_dataset(moved, 2, shuffle=False).load_state_dict(ranks[0].state(3))


def test_zarr_arrow_and_nested_mixtures_as_sources(tmp_path, sources):
    import datasets
    from sdl.loader import ArrowRows, ZarrSamples

    from tests.loader.data.test_zarr_samples import write_stores

    zarr_a = ZarrSamples(write_stores(tmp_path / "a"), fields=["labels"])
    zarr_b = ZarrSamples(write_stores(tmp_path / "b", lengths=(4,)), fields=["labels"])
    datasets.Dataset.from_dict({"labels": list(range(100, 130))}).save_to_disk(str(tmp_path / "rows"))
    rows = ArrowRows(tmp_path / "rows")
    inner = Mixture({"a": zarr_a, "b": zarr_b}, weights={"a": 1, "b": 1})
    outer = Mixture({"inner": inner, "rows": rows}, weights={"inner": 2, "rows": 1}, num_samples=60)
    batch = outer.__getitems__(list(range(60)))
    for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):  # inner ids: its stream positions
        assert int(batch["labels"][row]) == int(outer.sources[s][i]["labels"] if s else inner.stream_items([i])["labels"][0])
    drawn = batch["source_ids"][batch["source"] == 1].tolist()  # 20 draws of the 30 rows: part of one pass
    assert len(drawn) == 20 and len(set(drawn)) == 20 and set(drawn) <= set(range(30))


def test_torchdata_stateful_dataloader_resumes_a_mixture_under_new_weights(sources):
    tdl = pytest.importorskip("torchdata.stateful_dataloader")
    from sdl.loader import keep_batch

    def build(weights):
        mixture = Mixture({"web": sources["web"], "code": sources["code"]}, weights=weights, num_samples=N)
        sampler = ElasticSampler.for_dataset(mixture, 4, seed=5, shuffle=False)
        return mixture, tdl.StatefulDataLoader(mixture, batch_sampler=sampler, num_workers=2, collate_fn=keep_batch)

    def rows(batches, mixture):
        return [(0, k, mixture.names[s], i) for b in batches
                for k, s, i in zip(b["sample_ids"].tolist(), b["source"].tolist(), b["source_ids"].tolist())]

    mixture, loader = build({"web": 1, "code": 1})
    iterator = iter(loader)
    first = rows([next(iterator) for _ in range(9)], mixture)
    state = loader.state_dict()
    other, resumed = build({"web": 1, "code": 4})
    resumed.load_state_dict(state)
    check_passes(other, first + rows(list(resumed), other))


def test_rename_maps_differently_named_fields_to_common_ones(tmp_path):
    import datasets
    from sdl.loader import ArrowRows

    datasets.Dataset.from_dict({"text": [f"a{i}" for i in range(10)]}).save_to_disk(str(tmp_path / "a"))
    datasets.Dataset.from_dict({"content": [f"b{i}" for i in range(5)]}).save_to_disk(str(tmp_path / "b"))
    a, b = ArrowRows(tmp_path / "a"), ArrowRows(tmp_path / "b")
    with pytest.raises(ConfigError, match="a: text list; b: content list"):
        Mixture({"a": a, "b": b})
    mixture = Mixture({"a": a, "b": b}, weights={"a": 1, "b": 1}, rename={"b": {"content": "text"}}, num_samples=10)
    batch = mixture.__getitems__(list(range(10)))
    assert batch["text"] == [f"{'ab'[s]}{i}" for s, i in zip(batch["source"].tolist(), batch["source_ids"].tolist())]
    assert batch["source"].tolist().count(1) == 5 and sorted(batch["source_ids"][batch["source"] == 1].tolist()) == list(range(5))


def test_a_plain_dataloader_with_the_default_collate_gives_the_mixture_batches(sources):
    mixture = Mixture({"web": sources["web"], "code": sources["code"]}, num_samples=N)
    batch = next(iter(torch.utils.data.DataLoader(mixture, batch_size=6)))
    direct = mixture.__getitems__(list(range(6)))
    assert set(batch) == set(direct) and all(torch.equal(batch[k], direct[k]) for k in direct)
    assert batch["input_ids"].dtype == torch.int64 and mixture.wire_dtype == np.int32
