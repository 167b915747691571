"""A Mixture's lean route (mixture_step): a sampler's step of sources of one fixed shift, flat layout and no document
positions is one fancy index of its plan's SpanView; a step with a window across shards, and any step after an LRU
closed a shard, takes the general route. Every batch is the general route's (each source's own batch, assembled), on
either route, and holds its sources' samples."""

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from sdl.loader import Mixture, TokenWindows
from sdl.loader.data.mixture_plan import RowPlan
from sdl.loader.data.span_view import SpanView
from sdl.loader.errors import FormatError
from sdl.loader.sampling.batches import SampleBatch, share_chunk
from sdl.loader.sampling.sampler import ElasticSampler
from sdl.prepare.synthetic import write_synthetic_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mixture_checks import assembled, assert_same

SEQ_LEN = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """web and code, synthetic uint32 (token at p is p % 100,000), shards of 1,000 and 600 tokens: some windows cross."""
    root = tmp_path_factory.mktemp("step")
    for name, tokens, per_shard in (("web", 20_000, 1_000), ("code", 6_000, 600)):
        write_synthetic_dataset(root / name, num_tokens=tokens, tokens_per_shard=per_shard, vocab_size=100_000)
    return root / "web", root / "code"


def mixture_of(folders, **options):
    web, code = (TokenWindows(folder, seq_len=SEQ_LEN, stride=SEQ_LEN - 3, **options) for folder in folders)
    return Mixture({"web": web, "code": code}, weights={"web": 3, "code": 1})


def rare_code(folders, tmp_path, max_open_shards):
    """(web 0.99 and code 0.01, web, code): code of 40 shards of 150 tokens, its LRU keeping `max_open_shards`."""
    if not (tmp_path / "code").exists():
        write_synthetic_dataset(tmp_path / "code", num_tokens=6_000, tokens_per_shard=150, vocab_size=100_000)
    web = TokenWindows(folders[0], seq_len=SEQ_LEN, stride=SEQ_LEN - 3)
    code = TokenWindows(tmp_path / "code", seq_len=SEQ_LEN, stride=SEQ_LEN - 3, max_open_shards=max_open_shards)
    return Mixture({"web": web, "code": code}, weights={"web": 0.99, "code": 0.01}), web, code


def crossing(mixture, batch):
    """For each row of `batch`, whether its window crosses into its source's next shard."""
    rows = []
    for s, i in zip(*mixture.locate(list(batch), seed=batch.seed, epoch=batch.epoch, context=batch.context)):
        source = mixture.sources[int(s)]
        first, offset = source.index.locate(np.array([(source._windows.start + int(i)) * source.stride]))
        rows.append(bool(offset[0] + SEQ_LEN + 1 > source._lengths[first[0]]))
    return rows


def assert_holds_samples(mixture, batch):
    for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
        start = (mixture.sources[s]._windows.start + i) * mixture.sources[s].stride
        expected = np.arange(start, start + SEQ_LEN + 1) % 100_000
        assert batch["input_ids"][row].tolist() == expected[:-1].tolist()
        assert batch["labels"][row].tolist() == expected[1:].tolist()


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_lean_step_is_one_fancy_index_and_the_others_go_the_general_route(folders, monkeypatch, shuffle):
    """Steps are gathered by the lean route, a window across shards read piecewise into its row; exactly the chunk's
    first step (which makes the plan) and the steps whose first window crosses shards go through RowPlan.gather."""
    mixture = mixture_of(folders)
    general, gather = [], RowPlan.gather
    monkeypatch.setattr(RowPlan, "gather", lambda self, i, *rest: general.append(i) or gather(self, i, *rest))
    steps = list(ElasticSampler.for_dataset(mixture, 4, seed=2, shuffle=shuffle))[:120]
    expected = [assembled(mixture, step) for step in steps]
    taken = []
    for step, batch in zip(steps, expected):
        before = len(general)
        got = mixture.__getitems__(step)
        assert_same(got, batch)
        assert_holds_samples(mixture, got)
        taken.append(len(general) > before)
    first_of_chunk = [k == 0 or steps[k].chunk is not steps[k - 1].chunk for k in range(len(steps))]
    assert taken == [first or crossing(mixture, step)[0] for first, step in zip(first_of_chunk, steps)]
    assert 0 < sum(taken) < len(steps) // 4  # both routes taken, the lean one mostly
    assert any(any(crossing(mixture, step)) for step, general in zip(steps, taken) if not general)  # with windows across
    plan = steps[1].chunk.prepared
    assert plan.lean and isinstance(plan.rows._fast[0], SpanView) and plan.rows._fast[0] is plan.rows._span[0]


def test_a_step_after_an_lru_closed_a_shard_takes_the_maps_again(folders, tmp_path, monkeypatch):
    """An LRU closing a shard of an eager plan (code's LRU keeps 24 of its 40 shards; the plan's few code draws lie in
    fewer, and other reads of code push some out) sends the next step the general route, which takes the plan's maps
    through the LRUs again; the lean route then serves again, from a view over the maps now held. Every batch stays its
    sources' samples."""
    mixture, web, code = rare_code(folders, tmp_path, max_open_shards=24)
    general, gather = [], RowPlan.gather
    monkeypatch.setattr(RowPlan, "gather", lambda self, i, *rest: general.append(i) or gather(self, i, *rest))
    steps = list(ElasticSampler.for_dataset(mixture, 4, seed=4, shuffle=False))[:150]
    lean_after_closing, closed = 0, False
    for k, step in enumerate(steps):
        if k % 10 == 5:
            for sample in range(0, len(code), 9):
                code[sample]  # opens every code shard: the LRU closes the older ones, some the plan's
            closed = True
        before = len(general)
        batch = mixture.__getitems__(step)
        assert_same(batch, assembled(mixture, step))
        assert_holds_samples(mixture, batch)
        if len(general) == before and closed:
            lean_after_closing += 1
            closed = False
    plan = steps[0].chunk.prepared
    assert not plan.rows.lazy and lean_after_closing >= 10


def test_a_shard_replaced_after_its_lru_closed_it_is_named_at_the_next_lean_step(folders, tmp_path):
    """A shard of an eager plan that its LRU has closed, then replaced with other tokens: the next step, even one whose
    own LRU visit finds its shard unchanged, takes the maps again and names the file, instead of reading the old map."""
    mixture, web, code = rare_code(folders, tmp_path, max_open_shards=24)
    steps = list(ElasticSampler.for_dataset(mixture, 4, seed=1, shuffle=False))[:60]
    for step in steps[:3]:
        mixture.__getitems__(step)
    plan = steps[0].chunk.prepared.rows
    held = sorted(key // 2 for key in plan._held if key % 2 == 1)
    assert not plan.lazy and held and plan._fast[0] is plan._span[0]  # the lean route in use
    for sample in range(0, len(code), 9):
        code[sample]  # opens every code shard: the LRU closes the older ones, some the plan's
    victim = next(shard for shard in held if shard not in code._open.items)
    path = code.index.path_of(victim)
    tokens = np.load(path)
    np.save(tmp_path / "other.npy", (tokens + 7) % 100_000)
    os.replace(tmp_path / "other.npy", path)  # same size, another inode and mtime, other tokens
    lean = next(step for step in steps[3:] if not crossing(mixture, step)[0] and step.chunk is steps[0].chunk)
    with pytest.raises(FormatError, match=f"{path.name} (was modified|is now inode)"):
        mixture.__getitems__(lean)


@pytest.mark.parametrize("world_size, workers", [(1, 2), (4, 3)])
def test_a_worker_plans_the_positions_of_its_own_tasks(folders, monkeypatch, world_size, workers):
    """In a DataLoader worker (tasks of 16 steps dealt to the workers in turn, gathered into a ring slot) a plan holds
    the positions of the task that made it and of the worker's next tasks in turn, to the epoch's end, whatever the
    ranks and workers: not the other ranks' and workers' positions between them. A task out of turn is gathered from a
    plan of its own. Every batch is the general route's."""
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: types.SimpleNamespace(num_workers=workers, id=0))
    web, code = (TokenWindows(folder, seq_len=SEQ_LEN, stride=SEQ_LEN - 3) for folder in folders)
    mixture = Mixture({"web": web, "code": code}, weights={"web": 3, "code": 1}, num_samples=12 * 16 * 4 * world_size)
    plans, made = [], RowPlan.__init__
    monkeypatch.setattr(RowPlan, "__init__", lambda self, sources, positions, *rest: plans.append(positions.tolist())
                        or made(self, sources, positions, *rest))
    steps = list(ElasticSampler.for_dataset(mixture, 4, seed=3, shuffle=False, rank=world_size - 1, world_size=world_size))
    tasks = [steps[t:t + 16] for t in range(0, len(steps), 16)]
    assert len(tasks) == 12 and all(len(task) == 16 for task in tasks)
    slot = {name: np.full(shape, -1, dtype=dtype) for name, (shape, dtype) in mixture.slot_layout(4).items()}
    dealt = [0, workers, 1] + list(range(2 * workers, 12, workers))  # task 1 is another worker's: out of turn
    for t in dealt:
        task = [SampleBatch(list(step), seed=step.seed, epoch=step.epoch, position=step.position, context=step.context)
                for step in tasks[t]]  # as a worker receives them: pickled, without the sampler's chunk
        share_chunk(task)
        for step in task:
            assert_same(mixture.getitems_into(step, slot), assembled(mixture, step))
    in_turn = [[p for u in range(t, 12, workers) for step in tasks[u] for p in step] for t in (0, 1, 2 * workers)]
    assert plans == in_turn


def test_a_plan_takes_the_last_plans_maps_only_while_no_lru_has_closed_a_shard(tmp_path):
    """A new plan takes the maps of the last plan's view without visiting the LRUs only while no LRU has closed a shard
    since; after one has (here code's least recently used shard, one the last plan holds), it takes them through the
    LRUs, which name that shard, replaced meanwhile, as the plan is made (instead of its old map being read)."""
    for name, tokens, per_shard in (("web", 20_000, 1_000), ("code", 6_000, 600)):  # this test replaces a shard
        write_synthetic_dataset(tmp_path / name, num_tokens=tokens, tokens_per_shard=per_shard, vocab_size=100_000)
    mixture = mixture_of((tmp_path / "web", tmp_path / "code"))
    gather = mixture._row_gather()
    positions = np.arange(0, 600, dtype=np.int64)
    located = mixture.locate_all(positions)
    first = RowPlan(mixture.sources, positions, *located, gather._kept)
    assert first.lean_windows(0, 4, SEQ_LEN + 1) is not None and gather._kept[0] is first._span[0]
    again = RowPlan(mixture.sources, positions, *located, gather._kept)  # nothing closed: the same maps, no visits
    assert all(again._held[key] is first._held[key] for key in first._held)
    code = mixture.sources[1]
    victim = next(iter(code._open.items))
    assert victim * 2 + 1 in first._held
    code._open._close(1)
    path = code.index.path_of(victim)
    np.save(tmp_path / "other.npy", (np.load(path) + 7) % 100_000)
    os.replace(tmp_path / "other.npy", path)
    with pytest.raises(FormatError, match=f"{path.name} (was modified|is now inode)"):
        RowPlan(mixture.sources, positions, *located, gather._kept)


def test_a_random_shift_with_one_choice_gives_its_shift_on_every_route(folders):
    """shift="random" with a prime seq_len has one choice (1): its batches still carry `shift`, from one source and
    from a mixture, on the first step of a chunk and on the others alike."""
    sources = {folder.name: TokenWindows(folder, seq_len=17, shift="random") for folder in folders}
    assert sources["web"].shift_choices == [1]
    mixture = Mixture(sources, weights={"web": 3, "code": 1})
    for dataset in (mixture, sources["web"]):
        for step in list(ElasticSampler.for_dataset(dataset, 4, seed=1, shuffle=dataset is not mixture))[:4]:
            batch = dataset.__getitems__(step)
            assert batch["shift"] == 1 and batch["input_ids"].shape == (4, 17)
            if dataset is mixture:
                assert_same(batch, assembled(mixture, step))


def test_a_host_dtype_copy_reads_its_own_sources_from_a_chunk_the_original_planned(folders):
    """`with_host_dtype` (make_loader's copy) shares nothing it should not: steps of a chunk the original planned are
    the copy's own batches, in the copy's dtype."""
    mixture = mixture_of(folders)
    steps = list(ElasticSampler.for_dataset(mixture, 4, seed=1, shuffle=False))[:3]
    mixture.__getitems__(steps[0])
    narrow = mixture.with_host_dtype(np.int32)
    for step in steps[1:]:
        batch = narrow.__getitems__(step)
        assert batch["input_ids"].dtype == torch.int32
        assert_same(batch, assembled(narrow, step))


def test_a_plan_its_lrus_cannot_keep_open_any_more_reads_through_them(folders, tmp_path, monkeypatch):
    """When the process ran out of file descriptors, an LRU keeps fewer shards from then on: a plan holding more than
    that takes its maps again, finds the LRU cannot keep them all, and lets go of them (reads through the LRU), instead
    of reading maps the LRU no longer holds (whose files it no longer checks). And a plan that runs out of descriptors
    as it takes its maps reads through the LRUs too."""
    mixture, web, code = rare_code(folders, tmp_path, max_open_shards=32)
    steps = list(ElasticSampler.for_dataset(mixture, 4, seed=1, shuffle=False))
    for step in steps[:3]:
        mixture.__getitems__(step)
    plan = steps[0].chunk.prepared.rows
    assert not plan.lazy and sum(key % 2 for key in plan._held) > 4
    code._open.max_open = 4  # as `_shrink` leaves it
    code._open._close(len(code._open.items) - 4)
    for step in steps[3:40]:
        assert_same(mixture.__getitems__(step), assembled(mixture, step))
    assert plan.lazy and not plan._held and plan._span is None and plan._fast[0] is None and len(code._open.items) <= 4
    import errno
    import sdl.loader.data.shard_access as access
    real, fails = access.open_shard, [2]

    def no_descriptor(*args, **kwargs):
        if fails[0]:
            fails[0] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args, **kwargs)

    fresh, web, code = rare_code(folders, tmp_path, max_open_shards=32)
    later = list(ElasticSampler.for_dataset(fresh, 4, seed=2, shuffle=False))
    fresh.__getitems__(later[0])
    plan = later[0].chunk.prepared.rows
    code._open._close(len(code._open.items))  # the plan's code shards closed: the next step maps them anew
    assert_same(fresh.__getitems__(later[1]), assembled(fresh, later[1]))
    assert not plan.lazy and plan._fast is None  # its view is made again at the next step
    code._open._close(len(code._open.items))
    monkeypatch.setattr(access, "open_shard", no_descriptor)  # which finds no descriptor, twice
    with pytest.warns(RuntimeWarning, match="out of file descriptors"):
        for step in later[2:20]:
            assert_same(fresh.__getitems__(step), assembled(fresh, step))
    assert plan.lazy and not fails[0]
