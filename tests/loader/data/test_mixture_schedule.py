"""Weight schedule laws: exactly once per source pass across boundaries, resumes and reshards; the interleave bound
inside every piece; positions counted over the whole stream (epochs included); content; another schedule on resume."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader import Mixture, TokenWindows, make_loader
from sdl.loader.data.mixture_config import MixtureConfig
from sdl.loader.errors import ConfigError

from tests.loader.data.test_mixture import TOPOLOGIES, check_passes, run

N = 240
NAMES = ("web", "code", "math")
WEIGHTS = st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0]), min_size=3, max_size=3).filter(lambda w: sum(w) > 0)
SCHEDULES = st.lists(st.tuples(st.integers(1, 2 * N + 30), WEIGHTS), max_size=4, unique_by=lambda piece: piece[0])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from sdl.prepare.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("mix")
    for name, tokens in (("web", 2_000), ("code", 700), ("math", 400)):  # 249, 87, 49 windows of 8
        write_synthetic_dataset(root / name, num_tokens=tokens, tokens_per_shard=300, vocab_size=1000, doc_len=97)
    return {name: TokenWindows(root / name, seq_len=8) for name in NAMES}


def scheduled(sources, weights, changes, num_samples=N):
    schedule = [(at, dict(zip(NAMES, w))) for at, w in sorted(changes)]
    return Mixture({n: sources[n] for n in NAMES}, weights=dict(zip(NAMES, weights)), schedule=schedule, num_samples=num_samples)


def stream_sources(mixture, epochs):
    """Source index at every stream position of `epochs` whole epochs, from the initial phase (nothing resumed)."""
    return np.concatenate([mixture.locate(np.arange(len(mixture)), seed=5, epoch=e, context=mixture.phase.to_dict())[0]
                           for e in range(epochs)])


@settings(max_examples=15, deadline=None)
@given(st.lists(TOPOLOGIES, min_size=1, max_size=5), WEIGHTS, SCHEDULES)
def test_every_source_exactly_once_per_pass_across_boundaries_resumes_and_reshards(sources, segments, weights, changes):
    mixture = scheduled(sources, weights, changes)
    delivered, state = [], None
    for world_size, batch_size, steps in segments + [(2, 4, 10**6), (3, 5, 10**6)]:  # then to the end of two epochs
        more, state = run(mixture, state, world_size, batch_size, steps)
        delivered += more
    check_passes(mixture, delivered)
    initial = mixture.phase.to_dict()  # the same stream as a run never stopped: every position from the initial phase
    for epoch in {e for e, *_ in delivered}:
        mine = [(k, n, i) for e, k, n, i in delivered if e == epoch]
        source, ids = mixture.locate([k for k, _, _ in mine], seed=5, epoch=epoch, context=initial)
        assert [(mixture.names[s], i) for s, i in zip(source.tolist(), ids.tolist())] == [(n, i) for _, n, i in mine]


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(TOPOLOGIES, WEIGHTS, SCHEDULES), min_size=1, max_size=4))
def test_another_schedule_at_random_steps_continues_every_pass(sources, segments):
    delivered, state = [], None
    for (world_size, batch_size, steps), weights, changes in segments + [((1, 8, 10**6), [1, 1, 1], [])]:
        more, state = run(scheduled(sources, weights, changes), state, world_size, batch_size, steps)
        delivered += more
    check_passes(Mixture({n: sources[n] for n in NAMES}, num_samples=N), delivered)


@settings(max_examples=25, deadline=None)
@given(WEIGHTS, SCHEDULES)
def test_every_window_inside_a_piece_is_within_the_bound_and_positions_run_across_epochs(sources, weights, changes):
    mixture = scheduled(sources, weights, changes)
    source = stream_sources(mixture, 3)  # stream position e·N + k: the schedule continues across epochs
    starts = [0] + [at for at, _ in sorted(changes)] + [len(source)]
    pieces = [dict(zip(NAMES, weights))] + [dict(zip(NAMES, w)) for _, w in sorted(changes)]
    assert mixture.stream.bound <= 2
    for first, end, piece in zip(starts, starts[1:], pieces):
        if first >= end:
            continue
        total = sum(piece.values())
        for s, name in enumerate(NAMES):
            count = np.concatenate(([0], np.cumsum(source[first:end] == s)))
            error = count - np.arange(end - first + 1) * piece[name] / total  # any window: a difference of two errors
            assert error.max() - error.min() <= 2 + 1e-9, (name, first, end)


def test_content_workers_and_resume_on_another_topology_across_a_boundary(sources):
    mixture = scheduled(sources, [3, 1, 0], [(60, [1, 1, 1]), (150, [0, 1, 3])])
    loader = make_loader(mixture, 6, shuffle=False, num_workers=2, rank=0, world_size=1, device="cpu", seed=5)
    seen = []
    for step, batch in enumerate(loader):
        for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
            assert torch.equal(batch["input_ids"][row], mixture.sources[s][i]["input_ids"])
        seen += list(zip(batch["sample_ids"].tolist(), batch["source"].tolist(), batch["source_ids"].tolist()))
        if step == 12:  # position 78: past the first boundary, before the second
            break
    state = loader.state_dict()
    assert state["dataset"]["context"]["mixture"] == 2  # a schedule: an sdl reading no schedules refuses it
    resumed = make_loader(mixture, 3, shuffle=False, num_workers=1, rank=1, world_size=2, device="cpu", seed=5)
    resumed.load_state_dict(state)
    assert resumed.state_dict()["dataset"]["context"] == state["dataset"]["context"]  # the same phase: nothing adapted
    seen += [x for b in resumed for x in zip(b["sample_ids"].tolist(), b["source"].tolist(), b["source_ids"].tolist())]
    whole = make_loader(mixture, 6, shuffle=False, num_workers=0, rank=0, world_size=1, device="cpu", seed=5)
    expected = [x for b in whole for x in zip(b["sample_ids"].tolist(), b["source"].tolist(), b["source_ids"].tolist())]
    assert sorted(seen) == [x for x in expected if x[0] < 78 or x[0] % 6 >= 3]  # rank 1 of 2: the upper half of each step
    assert {s for k, s, _ in expected if k < 60} == {0, 1} and {s for k, s, _ in expected if k >= 150} == {1, 2}


def test_a_state_under_one_schedule_loads_into_another_from_its_cursor(sources):
    first = scheduled(sources, [1, 1, 1], [(50, [3, 1, 0])])
    delivered, state = run(first, None, 2, 5, 8)  # position 80
    other = scheduled(sources, [1, 0, 0], [(40, [0, 1, 1]), (120, [1, 0, 2]), (300, [1, 1, 1])])
    more, after = run(other, state, 3, 2, 6)  # adapted: a new phase at stream position 80, other's schedule from there
    context = after.dataset["context"]
    assert (context["start"], context["weights"], [at for at, _ in context["schedule"]]) == (80, {"web": 0.0, "code": 0.5, "math": 0.5}, [120, 300])
    assert {n for _, k, n, _ in more} == {"code", "math"} and len(more) == 36
    rest, end = run(other, after, 1, 8, 10**6)  # loaded into the same mixture: recognised, not adapted again
    assert run(other, after, 1, 8, 0)[1].dataset["context"] == context and end.epoch == 1
    assert {n for _, k, n, _ in rest if k >= 130} == {"web", "math"}
    check_passes(Mixture({n: sources[n] for n in NAMES}, num_samples=N), delivered + more + rest)


def test_a_state_of_sdl_before_schedules_resumes_and_takes_a_schedule_from_its_cursor(sources):
    plain = Mixture({n: sources[n] for n in NAMES}, weights={"web": 1, "code": 1, "math": 1}, num_samples=N)
    _, state = run(plain, None, 2, 5, 4)  # position 40, then new weights: a phase that starts at position 40
    plain = Mixture({n: sources[n] for n in NAMES}, weights={"web": 1, "code": 2, "math": 1}, num_samples=N)
    _, state = run(plain, state, 2, 5, 3)  # position 70
    old = state.to_dict()
    del old["dataset"]["context"]["start"]  # what an sdl before schedules wrote: the stream position is epoch·N + position
    assert run(plain, type(state).from_dict(old), 1, 8, 10**6)[0] == run(plain, state, 1, 8, 10**6)[0]
    later = scheduled(sources, [1, 1, 1], [(60, [1, 0, 0]), (100, [0, 1, 0])])
    more, after = run(later, type(state).from_dict(old), 1, 10, 3)
    assert after.dataset["context"]["start"] == 70 and {n for _, k, n, _ in more} == {"web"}


def test_num_samples_none_is_one_pass_of_the_first_source_to_run_out_under_the_schedule(sources):
    sizes = {n: len(sources[n]) for n in NAMES}  # 249, 87, 49
    mixture = scheduled(sources, [1, 0, 0.02], [(100, [1, 1, 0.02])], num_samples=None)
    counts = np.bincount(stream_sources(mixture, 1), minlength=3)
    assert (counts[0] < sizes["web"], counts[1] == sizes["code"], counts[2] < sizes["math"]) == (True, True, True)
    before = np.bincount(mixture.locate(np.arange(len(mixture) - 1))[0], minlength=3)
    assert (before < [sizes[n] for n in NAMES]).all()  # one position fewer: no source has finished a pass
    plan = make_loader(mixture, 1, shuffle=False, num_workers=0, rank=0, world_size=1, device="cpu").plan().sources
    assert [(p["from"], p["to"], p["draws"]) for p in plan["code"]["pieces"]] == [(0, 100, 0), (100, len(mixture), 87)]
    assert plan["code"]["passes_to_epoch_end"] == 1.0 and plan["web"]["pieces"][0]["weight"] == pytest.approx(1 / 1.02)


BAD = [
    ([(100, {"web": 1, "code": 1, "math": 1}), (50, {"web": 1, "code": 1, "math": 1})], "schedule position 50 .after 100."),
    ([(100, {"web": 1, "code": 1, "math": 1})] * 2, "schedule position 100 .after 100."),
    ([(-5, {"web": 1, "code": 1, "math": 1})], "position -5 .after 0. is not an integer > 0"),
    ([(0, {"web": 1, "code": 1, "math": 1})], "weights hold from position 0"),
    ([(10.5, {"web": 1, "code": 1, "math": 1})], "position 10.5"),
    ([(2**62, {"web": 1, "code": 1, "math": 1})], r"position 4,611,686,018,427,387,904 is not below 2\*\*62 .* give a smaller"),
    ([(2**70, {"web": 1, "code": 1, "math": 1})], r"position 1,180,591,620,717,411,303,424 is not below 2\*\*62"),  # was OverflowError
    ([(10, {"web": 1, "code": 1, "mth": 1})], r"at position 10 name .*missing \['math'\], unknown \['mth'\]"),
    ([(10, {"web": 1, "code": -1, "math": 1})], "at position 10 are .*expected finite numbers >= 0, at least one > 0"),
    ([(10, {"web": 0, "code": 0, "math": 0})], "at least one > 0"),
    ([(10, {"web": float("nan"), "code": 1, "math": 1})], "expected finite numbers"),
    ("later", "expected \\[\\(position, \\{source: weight\\}\\), ...\\]"),
]


@pytest.mark.parametrize("schedule, message", BAD)
def test_bad_schedules_are_one_line_config_errors(sources, schedule, message):
    with pytest.raises(ConfigError, match=message) as raised:
        Mixture({n: sources[n] for n in NAMES}, schedule=schedule)
    assert len(str(raised.value).splitlines()) == 1
    entries = [{"position": at, "weights": w} for at, w in schedule] if isinstance(schedule, list) else schedule
    data = {"sources": {n: {"path": str(sources[n].path), "weight": 1} for n in NAMES}, "schedule": entries}
    with pytest.raises(ConfigError, match=message if isinstance(schedule, list) else "expected \\[\\[schedule\\]\\] tables"):
        MixtureConfig.from_dict(data)


def test_weights_whose_sum_overflows_a_float_normalise_as_their_ratios(sources):  # were "mixture weights are [0.0, 0.0]"
    two = {n: sources[n] for n in ("web", "code")}
    plain = Mixture(two, weights={"web": 3, "code": 1}, schedule=[(10, {"web": 1, "code": 1})])
    huge = Mixture(two, weights={"web": 3 * 2**1022, "code": 2**1022}, schedule=[(10, {"web": 1e308, "code": 1e308})])
    assert huge.weights == {"web": 0.75, "code": 0.25} and huge.schedule == plain.schedule and huge.identity == plain.identity
    message = r"^mixture weights are \{'web': <an integer of 401 digits, beyond a float's range>, 'code': 1\}; expected finite"
    with pytest.raises(ConfigError, match=message):  # was an OverflowError
        Mixture(two, weights={"web": 10**400, "code": 1})


def test_config_round_trip_builds_the_scheduled_mixture(sources, tmp_path):
    from sdl.loader.data.mixture_config import read_mixture_config

    body = "seq_len = 8\nnum_samples = 240\n" + "".join(f'[sources.{n}]\npath = "{sources[n].path}"\nweight = {w}\n'
                                                       for n, w in zip(NAMES, (3, 1, 1)))
    body += "[[schedule]]\nposition = 1_000\nweights = { web = 1, code = 1, math = 0 }\n"
    (tmp_path / "mix.toml").write_text(body + "[[schedule]]\nposition = 5_000\nweights = { web = 0, code = 1, math = 4 }\n")
    config = read_mixture_config(tmp_path / "mix.toml")
    assert config.schedule == ((1000, {"web": 1, "code": 1, "math": 0}), (5000, {"web": 0, "code": 1, "math": 4}))
    assert MixtureConfig.from_dict(config.to_dict()) == config
    mixture = config.build()
    assert mixture.schedule == ((1000, {"web": 0.5, "code": 0.5, "math": 0.0}), (5000, {"web": 0.0, "code": 0.2, "math": 0.8}))
    assert mixture.describe()["schedule"] == [[1000, {"web": 0.5, "code": 0.5, "math": 0.0}], [5000, {"web": 0.0, "code": 0.2, "math": 0.8}]]
    assert mixture.identity != Mixture(dict(zip(NAMES, mixture.sources)), weights={"web": 3, "code": 1, "math": 1}, num_samples=240).identity
