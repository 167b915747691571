"""A Mixture of TokenWindows gathers a batch from a plan of its positions (mixture_plan): the sampler's chunk of steps
in process, the run of consecutive positions in a worker or from a plain list. Every planned batch is the general
route's batch (each source's own batch, assembled) and holds source[id] — on every copy route (one fancy index of
a span view over a plan's shards; for plans over many shards, row copies of long windows, fancy indices of short
ones), across shard boundaries, with document positions, random shifts, several shards
per source, any topology and a resume; and the ids a source draws a block at a time are its own order's."""

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader import Mixture, TokenWindows, make_loader
from sdl.loader.data import mixture_plan
from sdl.loader.data.mixture_ids import ID_BLOCK
from sdl.loader.data.mixture_step import StepPlan
from sdl.loader.data.span_view import SpanView
from sdl.loader.errors import FormatError
from sdl.loader.sampling.order import Order
from sdl.loader.sampling.sampler import ElasticSampler
from sdl.prepare import PrepareConfig, prepare
from sdl.prepare.synthetic import write_synthetic_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mixture_checks import assembled, assert_same

ROWS = {"uint32": 1024, "uint16": 2048}  # windows of at least ROW_COPY_BYTES: copied row by row
SHORT = 16  # copied by fancy indices
assert all(seq_len * int(dtype[4:]) // 8 >= mixture_plan.ROW_COPY_BYTES for dtype, seq_len in ROWS.items())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two pairs of datasets, shards of 2,500 tokens (long windows span up to two boundaries): synthetic uint32 ones
    (token at p is p % 100,000), and `sdl prepare`d uint16 ones with document starts (documents of 3 to 2,000 words)."""
    root, rng = tmp_path_factory.mktemp("plan"), random.Random(5)
    for name, tokens in (("web", 24_000), ("code", 9_000)):
        write_synthetic_dataset(root / name, num_tokens=tokens, tokens_per_shard=2_500, vocab_size=100_000)
    for name, docs in (("web-docs", 24), ("code-docs", 9)):
        texts = root / f"{name}-texts"
        texts.mkdir()
        for i in range(docs):
            words = rng.choice([3, 40, 300, 900, 2_000])
            (texts / f"d{i:02d}.txt").write_text(" ".join(rng.choice(["the", "data", "x=1;", "shard", "数据"]) for _ in range(words)))
        prepare(PrepareConfig(sources=(str(texts),), out=str(root / name), tokens_per_shard=2_500))
    return {False: (root / "web", root / "code"), True: (root / "web-docs", root / "code-docs")}


def mixture_of(folders, long, doc_starts=False, shift=1, layout="flat", **extra):
    """web and code at 3:1, their windows long (row copies) or short, with document positions or not."""
    sources = {}
    for i, folder in enumerate(folders[doc_starts]):
        dtype = json.loads((folder / "manifest.json").read_text())["dtype"]
        seq_len = ROWS[dtype] if long else SHORT
        sources[folder.name.removesuffix("-docs")] = TokenWindows(folder, seq_len=seq_len, stride=seq_len // 2 + i, shift=shift,
                                                                  layout=layout, doc_starts=doc_starts)
    return Mixture(sources, weights={"web": 3, "code": 1}, **extra)


def assert_holds_samples(mixture, batch, synthetic):
    """Each row is its source's sample; in a synthetic dataset (token at p is p % 100,000) also by the window's start."""
    for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
        source = mixture.sources[s]
        if synthetic:
            start, shift = (source._windows.start + i) * source.stride, batch.get("shift", source.shift_choices[0])
            expected = (np.arange(start, start + source.seq_len + shift) % 100_000).tolist()
            assert batch["input_ids"][row].reshape(-1).tolist() == expected[:source.seq_len]
            assert batch["labels"][row].reshape(-1).tolist() == expected[shift:]
        if "shift" not in batch:  # a single sample has shift 1 under shift="random"
            sample = source[i]
            assert all(torch.equal(batch[k][row], sample[k]) for k in ("input_ids", "labels", "position_ids") if k in sample)


@settings(max_examples=12, deadline=None)
@given(st.booleans(), st.booleans(), st.sampled_from([(1, "flat"), ("random", "flat"), (2, "grouped")]),
       st.integers(0, 2**31), st.integers(1, 9), st.sampled_from([1, 2, 3]), st.booleans())
def test_planned_batches_equal_the_assembled_batch_and_hold_the_samples(folders, long, doc_starts, shift_layout, seed,
                                                                      batch_size, world_size, shuffle):
    shift, layout = shift_layout
    mixture = mixture_of(folders, long, doc_starts, shift, layout)
    rng = np.random.default_rng(seed)
    batches = []
    for rank in range(world_size):  # the sampler's chunks of steps: the first ones, and the epoch's padded end
        sampler = ElasticSampler.for_dataset(mixture, batch_size, seed=seed, shuffle=shuffle, rank=rank,
                                             world_size=world_size, drop_last=False)
        steps = list(sampler)
        batches += steps[:12] + steps[-2:]
    for _ in range(3):  # plain lists of consecutive positions (a plain DataLoader's, shuffle=False), and one that is not
        lo = int(rng.integers(0, len(mixture) - batch_size + 1))
        batches.append(list(range(lo, lo + batch_size)))
    batches.append(list(range(len(mixture) - batch_size, len(mixture))))  # the epoch's last positions
    batches.append(rng.integers(0, len(mixture), size=batch_size).tolist())
    for indices in batches:
        batch = mixture.__getitems__(indices)
        expected = assembled(mixture, indices)
        assert_same(batch, expected)
        assert_holds_samples(mixture, batch, not doc_starts)
    slot = {name: np.full(shape, -1, dtype=dtype) for name, (shape, dtype) in mixture.slot_layout(batch_size).items()}
    for indices in batches[:4] + batches[-5:]:  # into a worker's ring slot (the sampler's chunk is not sent there)
        assert_same(mixture.getitems_into(indices, slot), assembled(mixture, indices))


def test_every_route_is_taken(folders):
    """The batches above come from plans: a sampler's steps from its chunk's StepPlan, consecutive lists from a range
    plan; a plan over few shards gathers each batch by one fancy index of a SpanView over them, with the windows across
    shard boundaries read piecewise."""
    for long in (True, False):
        mixture = mixture_of(folders, long)
        rows = mixture._row_gather()
        assert rows.planned
        batches = list(ElasticSampler.for_dataset(mixture, 4, shuffle=False))[:60]
        for batch in batches:
            assert_same(mixture.__getitems__(batch), assembled(mixture, batch))
        plan = batches[0].chunk.prepared
        assert isinstance(plan, StepPlan) and plan.owner is rows
        assert isinstance(plan.rows._span[0], SpanView) and not plan.rows.lazy
        assert min(plan.rows.key_list) == -1 < max(plan.rows.key_list)  # some windows cross into the next shard
        assert len({key for key in plan.rows.key_list if key >= 0}) > 2  # several shards of several sources
        mixture.__getitems__([5, 6, 7])
        assert rows._range is not None and rows._range[1] == 5


def test_a_span_view_over_shards_the_lru_has_reopened_is_made_again(folders):
    """A source's LRU may close a shard and map it anew: the plan then makes its SpanView again over the new map (the
    old view holds the old maps, so nothing it addresses is unmapped), and every batch stays its sources' samples."""
    mixture = mixture_of(folders, True)
    batches = list(ElasticSampler.for_dataset(mixture, 4, seed=3, shuffle=True))[:40]
    assert_same(mixture.__getitems__(batches[0]), assembled(mixture, batches[0]))
    plan = batches[0].chunk.prepared.rows
    before = plan._span[0]
    for source in mixture.sources:
        source._open.items.clear()  # every shard closed: the next visit maps them anew
    for batch in batches[1:]:
        assert_same(mixture.__getitems__(batch), assembled(mixture, batch))
        assert_holds_samples(mixture, mixture.__getitems__(batch), True)
    assert plan._span[0] is not before


def test_a_shard_changed_after_its_lru_closed_it_is_named_not_read(tmp_path):
    """An eager plan holds its shards' maps: when a source's LRU has closed one of them since (other reads of the
    source), the next batch takes them all through the LRUs again, and the LRU names the changed file instead of the
    old map reading zeros (or SIGBUS). Here code is drawn ~40 times a plan, from fewer of its 64 shards than its LRU
    keeps (48), so the plan maps them when it is made."""
    write_synthetic_dataset(tmp_path / "web", num_tokens=4 * 16_384, tokens_per_shard=16_384, vocab_size=100_000)
    write_synthetic_dataset(tmp_path / "code", num_tokens=64 * 1_024, tokens_per_shard=1_024, vocab_size=100_000)
    web = TokenWindows(tmp_path / "web", seq_len=SHORT, stride=SHORT)
    code = TokenWindows(tmp_path / "code", seq_len=SHORT, stride=SHORT, max_open_shards=48)
    mixture = Mixture({"web": web, "code": code}, weights={"web": 0.99, "code": 0.01})
    steps = list(ElasticSampler.for_dataset(mixture, 4, shuffle=False))[:100]
    assert_same(mixture.__getitems__(steps[0]), assembled(mixture, steps[0]))
    plan = steps[0].chunk.prepared.rows
    held = sorted(key // 2 for key in plan._held if key % 2 == 1)  # code's shards in the plan
    assert not plan.lazy and isinstance(plan._span[0], SpanView) and len(held) < 48
    for shard in range(64):
        if shard not in held:
            code[shard * (1_024 // SHORT)]  # other reads of code push some of the plan's shards out of its LRU
    victim = next(shard for shard in held if shard not in code._open.items)
    os.truncate(code.index.path_of(victim), 128)
    with pytest.raises(FormatError, match=f"shard-{victim:06d}.npy is now 128 bytes"):
        for step in steps[1:]:
            mixture.__getitems__(step)


@pytest.mark.parametrize("max_open, lazy", [(2, True), (64, False)])
def test_one_dataset_as_two_sources_shares_one_lru(folders, max_open, lazy):
    """The same TokenWindows as two sources has one LRU of open shards: a plan maps their shards when it is made only
    when that one LRU keeps them all (else it would close some of the plan's maps as it makes them)."""
    web = TokenWindows(folders[False][0], seq_len=SHORT, max_open_shards=max_open)
    mixture = Mixture({"a": web, "b": web}, weights={"a": 1, "b": 1})
    steps = list(ElasticSampler.for_dataset(mixture, 4, seed=6, shuffle=True))[:30]
    for step in steps:
        assert_same(mixture.__getitems__(step), assembled(mixture, step))
    plan = steps[0].chunk.prepared.rows
    assert plan.lazy == lazy and (lazy or all(web._open.items.get(key // 2) is plan._held[key] for key in plan._held))


def test_a_step_asked_for_again_is_not_what_the_caller_did_to_it(folders):
    """A batch's tensors are its own (the plan's id columns are copied once per chunk, and each step's tensors handed
    out once): editing them in place changes nothing later."""
    mixture = mixture_of(folders, True)
    for batch in list(ElasticSampler.for_dataset(mixture, 4, shuffle=False))[:6]:
        first = mixture.__getitems__(batch)
        for value in first.values():
            value.add_(1_000)
        assert_same(mixture.__getitems__(batch), assembled(mixture, batch))


@pytest.mark.parametrize("long", [True, False])
@pytest.mark.parametrize("bound", ["lru", "eager_shards"])
def test_a_plan_over_many_shards_maps_them_batch_by_batch(tmp_path, monkeypatch, long, bound):
    """Windows in more (source, shard) pairs than a source's LRU keeps open, or than EAGER_SHARDS: a plan does not map
    them all when it is made (nor keep them mapped, nor make a SpanView); each batch maps its own, through the source's
    LRU of open shards, and copies long windows row by row, short ones by a fancy index per shard."""
    for name, tokens in (("web", 150_000), ("code", 60_000)):
        write_synthetic_dataset(tmp_path / name, num_tokens=tokens, tokens_per_shard=1_500, vocab_size=100_000)
    seq_len = ROWS["uint32"] if long else SHORT
    max_open = 8 if bound == "lru" else None
    if bound == "eager_shards":
        monkeypatch.setattr(mixture_plan, "EAGER_SHARDS", 16)
    sources = {name: TokenWindows(tmp_path / name, seq_len=seq_len, stride=700 if long else 11, max_open_shards=max_open)
               for name in ("web", "code")}
    mixture = Mixture(sources, weights={"web": 3, "code": 1})
    batches = list(ElasticSampler.for_dataset(mixture, 6, seed=1, shuffle=True))[:30]
    for batch in batches:
        assert_same(mixture.__getitems__(batch), assembled(mixture, batch))
        assert_holds_samples(mixture, mixture.__getitems__(batch), True)
    plan = batches[0].chunk.prepared.rows
    assert plan.lazy and not plan._held and plan._span is None
    assert len({k for k in plan.key_list if k >= 0}) > (8 if bound == "lru" else 16)
    assert all(source.num_open_shards <= (8 if bound == "lru" else 100) for source in sources.values())


def test_a_plan_over_many_shards_that_stay_open_is_one_view_kept_across_plans(tmp_path):
    """Many shards the LRUs keep open (the default): each plan maps them and gathers every batch by one fancy index of
    a SpanView, the same view for the next plan while it holds the same maps, and the batches are exact."""
    for name, tokens in (("web", 150_000), ("code", 60_000)):
        write_synthetic_dataset(tmp_path / name, num_tokens=tokens, tokens_per_shard=1_500, vocab_size=100_000)
    sources = {name: TokenWindows(tmp_path / name, seq_len=SHORT, stride=11) for name in ("web", "code")}
    mixture = Mixture(sources, weights={"web": 3, "code": 1})
    steps = list(ElasticSampler.for_dataset(mixture, 8, seed=1, shuffle=True))
    chunks = list(dict.fromkeys(batch.chunk for batch in steps))[:3]
    views = []
    for chunk in chunks:
        for batch in [b for b in steps if b.chunk is chunk][:40]:
            assert_holds_samples(mixture, mixture.__getitems__(batch), True)
        plan = chunk.prepared.rows
        assert not plan.lazy and len(plan._held) > 64 and plan._span[0] is not None
        views.append(plan._span[0])
    assert views[0] is views[1] is views[2]


def test_sources_that_differ_in_shift_dtype_or_layout_are_not_planned(folders, tmp_path):
    web = TokenWindows(folders[False][0], seq_len=SHORT)
    assert not Mixture({"a": web, "b": TokenWindows(folders[False][1], seq_len=SHORT, shift=2)})._row_gather().planned
    write_synthetic_dataset(tmp_path / "narrow", num_tokens=3_000, tokens_per_shard=2_500, vocab_size=1_000)  # uint16
    narrow = TokenWindows(tmp_path / "narrow", seq_len=SHORT)
    mixture = Mixture({"a": web, "b": narrow})
    assert not mixture._row_gather().planned
    indices = list(range(10))
    assert_same(mixture.__getitems__(indices), assembled(mixture, indices))


def test_a_resumed_loader_continues_the_planned_stream(folders):
    mixture = mixture_of(folders, True, doc_starts=True, num_samples=100)
    keys = ("input_ids", "labels", "position_ids", "sample_ids", "source", "source_ids")
    whole = [{k: b[k].clone() for k in keys} for b in make_loader(mixture, 3, seed=4, shuffle=False, num_workers=0, device="cpu")]
    loader = make_loader(mixture, 3, seed=4, shuffle=False, num_workers=0, device="cpu")
    iterator = iter(loader)
    for _ in range(7):
        next(iterator)
    state = loader.state_dict()
    for batch_size in (3, 4):  # the same topology, and another one (same positions, other batches)
        other = make_loader(mixture_of(folders, True, doc_starts=True, num_samples=100), batch_size, seed=4, shuffle=False,
                            num_workers=0, device="cpu")
        other.load_state_dict(state)
        batches = list(other)  # the rest of the epoch
        rest = {k: torch.cat([b[k] for b in batches]) for k in keys}
        assert all(torch.equal(rest[k], torch.cat([b[k] for b in whole[7:]])[:len(rest[k])]) for k in keys)
        assert len(rest["sample_ids"]) == 3 * (len(whole) - 7) - (3 * (len(whole) - 7)) % batch_size


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.integers(0, 3 * 10_000 - 1), min_size=1, max_size=40))
def test_ids_drawn_a_block_at_a_time_are_the_sources_own_order(folders, seed, positions):
    """A source larger than ID_BLOCK, drawn over three passes: each position's id is its Feistel order's, whatever the
    order of the positions asked for (many blocks and passes in one lookup)."""
    single = TokenWindows(folders[False][0], seq_len=1, stride=2)  # ~12,000 samples: three blocks of ids a pass
    assert len(single) > 2 * ID_BLOCK
    mixture = Mixture({"web": single}, num_samples=3 * len(single))
    positions = [p % len(mixture) for p in positions]
    _, ids = mixture.locate(positions, seed=seed)
    key = f"mixture-source:web:{single.identity}"
    expected = [int(Order(num_samples=len(single), seed=seed, epoch=p // len(single), key=key)[p % len(single)])
                for p in positions]
    assert ids.tolist() == expected
