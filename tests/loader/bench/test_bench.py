"""run_bench on a tiny config: every field present and sane (no timing assertions), the readers agree on content."""

import hashlib
import math
import statistics
import sys

import numpy as np
import pytest
from sdl.loader.bench import BenchConfig, run_bench
from sdl.loader.bench.baseline import SliceCeiling, naive_windows
from sdl.loader.bench.report import ROUNDS
from sdl.loader.data.windows import TokenWindows
from sdl.loader.errors import ConfigError
from sdl.loader.format.atomic import atomic_write_bytes, atomic_write_json
from sdl.loader.format.tokens import Manifest, ShardInfo, npy_bytes, shard_name
from sdl.prepare.synthetic import write_synthetic_dataset

TINY = dict(seq_len=64, batch_size=4, steps=4,
            warmup_steps=1, step_ms=1.0, device="cpu", resume_memory_samples=10**9)


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tokens"
    write_synthetic_dataset(path, num_tokens=40_000, tokens_per_shard=16_384, vocab_size=70_000)
    return path


@pytest.fixture(scope="module")
def report(dataset):
    return run_bench(BenchConfig(num_workers=1, **TINY), dataset)


def test_throughput_and_ratios_are_positive(report):
    assert set(report.throughput) == {"sdl_in_process", "baseline_in_process", "ceiling", "ceiling_held", "ceiling_per_row", "sdl_workers",
                                      "baseline_workers"}
    for result in report.throughput.values():
        assert result.batches == TINY["steps"] * ROUNDS and len(result.rounds) == ROUNDS and all(map(positive, result.rounds))
        for value in (result.samples_per_s, result.tokens_per_s, result.mb_per_s, result.latency_p50_ms, result.latency_p99_ms):
            assert positive(value)
        assert result.main_cpu_ms_per_batch >= 0
        assert result.latency_p99_ms >= result.latency_p50_ms
        assert result.tokens_per_s == pytest.approx(result.samples_per_s * TINY["seq_len"])
    assert set(report.ratios) == {"sdl_vs_baseline_in_process", "sdl_vs_ceiling", "sdl_vs_held_ceiling", "sdl_vs_per_row_ceiling", "sdl_vs_baseline_workers",
                                  "sdl_workers_vs_in_process", "main_cpu_workers_vs_in_process"}
    assert all(positive(value) for key, value in report.ratios.items() if key != "main_cpu_workers_vs_in_process")
    rounds = {name: result.rounds for name, result in report.throughput.items()}  # each ratio: the median of its rounds'
    assert report.ratios["sdl_workers_vs_in_process"] == statistics.median(
        w / i for w, i in zip(rounds["sdl_workers"], rounds["sdl_in_process"]))
    assert report.ratios["sdl_vs_ceiling"] == statistics.median(s / c for s, c in zip(rounds["sdl_in_process"], rounds["ceiling"]))
    assert positive(report.physical["memcpy_gb_per_s"])
    assert report.physical["memcpy_tokens_per_s"] == pytest.approx(report.physical["memcpy_gb_per_s"] * 1e9 / 16)  # int64 pairs


def test_resume_covers_each_fraction_with_and_without_workers(report):
    assert sorted((r.num_workers, r.fraction) for r in report.resume) == [(w, f) for w in (0, 1) for f in (0.01, 0.5, 0.99)]
    num_samples = report.dataset["num_samples"]
    for result in report.resume:
        assert positive(result.first_batch_ms)
        assert 0 <= result.cursor < num_samples
    assert report.resume_memory.num_samples == 10**9


def test_resume_memory_is_bounded_and_the_same_for_any_epoch_size(report):
    """O(1) resume: restoring mid-epoch of 10**9 samples allocates what it does for 10**4 (numpy's buffers are traced);
    a stored order or consumed mask of 10**9 samples would alone be 1,000–8,000 MB."""
    from sdl.loader.bench.measure import measure_resume_memory

    small = measure_resume_memory(BenchConfig(**TINY | {"resume_memory_samples": 10**4}))
    peak = report.resume_memory.tracemalloc_peak_mb
    assert 0 < small.tracemalloc_peak_mb and 0 < peak < 8
    assert abs(peak - small.tracemalloc_peak_mb) < 0.5


def test_stall_fractions_are_fractions_and_cuda_fields_are_null_on_cpu(report):
    for result in report.stall.values():
        assert 0.0 <= result.stall_fraction <= 1.0
        assert result.steps == TINY["steps"] == len(result.wait_ms) == len(result.compute_ms)
        assert result.gpu_utilisation is None
    assert all(value is None for value in report.to_dict()["cuda"].values())
    assert report.dataset["synthetic"] and report.dataset["dtype"] == "uint32" and report.dataset["num_shards"] == 3


def test_no_workers_leaves_worker_figures_null(dataset):
    report = run_bench(BenchConfig(num_workers=0, **TINY), dataset)
    assert report.throughput["sdl_workers"] is None and report.ratios["sdl_vs_baseline_workers"] is None
    assert {r.num_workers for r in report.resume} == {0}


def test_baseline_and_ceiling_read_the_same_windows_as_sdl(token_dataset):
    path = token_dataset(num_tokens=5_000, tokens_per_shard=5_000, vocab_size=70_000)
    ds = TokenWindows(path, seq_len=32, stride=24)
    ids = np.array([0, 5, 77, len(ds) - 1])
    batch = ds.__getitems__(ids.tolist())
    naive = naive_windows(ds)
    assert all(np.array_equal(naive[int(i)]["input_ids"], batch["input_ids"][k]) for k, i in enumerate(ids))
    assert all(np.array_equal(naive[int(i)]["labels"], batch["labels"][k]) for k, i in enumerate(ids))
    ceiling = SliceCeiling(ds, len(ids), np.int64)
    gathered = ceiling.gather(ceiling.plan(ids))
    assert gathered.dtype == np.int64 and gathered.shape == (2, len(ids), 32)
    assert np.array_equal(gathered[0], batch["input_ids"].numpy()) and np.array_equal(gathered[1], batch["labels"].numpy())


def test_the_ceiling_copies_the_same_windows_across_shards(token_dataset):
    """Windows of one shard (one window-view gather) or of several (one gather of a view over all shards), and the
    per-row reference; none crosses a boundary here, where the ceilings read from the end of the first shard instead."""
    ds = TokenWindows(token_dataset(num_tokens=5_000, tokens_per_shard=1_000, vocab_size=70_000), seq_len=32, stride=33)
    for per_row in (False, True):
        ceiling = SliceCeiling(ds, 4, np.int64, per_row=per_row)
        for ids in ([0, 1, 2, 3], [0, 40, 80, 120], [149, 3, 31, 62]):
            planned = ceiling.plan(np.array(ids))
            assert (planned[0] is not None) == (not per_row)  # one gather: of one shard's view, or of all shards'
            assert (planned[0] is ceiling.span.view) == (ids != [0, 1, 2, 3] and not per_row)
            batch = ds.__getitems__(ids)
            gathered = ceiling.gather(planned)
            assert np.array_equal(gathered[0], batch["input_ids"].numpy()) and np.array_equal(gathered[1], batch["labels"].numpy())


def ragged_dataset(folder, sizes, vocab=70_000):
    """A token dataset with shards of `sizes` tokens (uint32; token at global position p is p % vocab), as jobs joined
    by `sdl index` leave them: any shard may be shorter than a window."""
    folder.mkdir()
    shards, start = [], 0
    for i, n in enumerate(sizes):
        data = npy_bytes((np.arange(start, start + n) % vocab).astype(np.uint32))
        atomic_write_bytes(folder / shard_name(i), data)
        shards.append(ShardInfo(file=shard_name(i), num_tokens=n, num_docs=0, checksum="sha256:" + hashlib.sha256(data).hexdigest()))
        start += n
    tokenizer = {"name": "synthetic", "vocab_size": vocab, "eos_id": vocab - 1, "bos_id": None, "hash": None}
    manifest = Manifest(dtype="uint32", tokens_per_shard=max(sizes), tokenizer=tokenizer, shards=tuple(shards),
                        sources=({"path": "synthetic", "size": start, "fingerprint": f"p%{vocab}"},))
    atomic_write_json(folder / "manifest.json", manifest.to_dict())
    return folder


def test_the_ceiling_reads_a_window_of_a_shard_shorter_than_a_window(tmp_path):
    """A window starting in a shard shorter than itself is read across shards (before: memory before the shard)."""
    ds = TokenWindows(ragged_dataset(tmp_path / "ragged", [100, 5, 100]), seq_len=16, stride=1)
    for per_row in (False, True):
        for ids in ([100, 10, 150], [100], [100, 101]):  # the windows at 100, 101 start in the 5-token shard
            ceiling = SliceCeiling(ds, len(ids), np.int64, per_row=per_row)
            gathered = ceiling.gather(ceiling.plan(np.array(ids)))
            batch = ds.__getitems__(ids)
            assert np.array_equal(gathered[0], batch["input_ids"].numpy()) and np.array_equal(gathered[1], batch["labels"].numpy())
            assert gathered[0][0].tolist() == list(range(100, 116))


def test_the_held_ceiling_keeps_the_previous_batch_intact_while_making_the_next(token_dataset):
    ds = TokenWindows(token_dataset(num_tokens=5_000, tokens_per_shard=1_000, vocab_size=70_000), seq_len=32, stride=33)
    batches = ([0, 1, 2, 3], [40, 41, 42, 43], [149, 3, 31, 62], [5, 6, 7, 8])
    for buffers, intact in ((1, False), (2, True)):
        ceiling = SliceCeiling(ds, 4, np.int64, buffers=buffers)
        previous = None
        for ids in batches:
            gathered = ceiling.gather(ceiling.plan(np.array(ids)))
            expected = ds.__getitems__(ids)["input_ids"].numpy()
            assert np.array_equal(gathered[0], expected)
            if previous is not None:  # what a caller still holds of the batch before
                held, wanted = previous
                assert np.array_equal(held[0], wanted) == intact
            previous = (gathered, expected)


def test_naive_windows_cross_shard_boundaries(token_dataset):
    ds = TokenWindows(token_dataset(num_tokens=3_000, tokens_per_shard=1_000, vocab_size=70_000), seq_len=100, stride=90)
    naive = naive_windows(ds)
    for i in range(len(ds)):
        assert np.array_equal(naive[i]["input_ids"].numpy(), (np.arange(100) + i * 90) % 70_000)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(num_workers=-1), dict(device="tpu"), dict(step_ms=-1.0), dict(stride=0)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ConfigError):
        BenchConfig(**bad)


def test_peers_run_on_the_same_windows_or_say_why_not(dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "streaming", None)  # MosaicML Streaming as where it is not installed: `import` fails
    report = run_bench(BenchConfig(num_workers=0, peers=("torchdata", "hf", "mosaic"), **TINY), dataset)
    for name in ("torchdata", "hf"):
        assert report.peers[name]["version"] and report.peers[name]["in_process"].batches == TINY["steps"]
        assert report.peers[name]["workers"] is None
    assert "skipped" in report.peers["mosaic"] and "mosaicml-streaming" in report.peers["mosaic"]["skipped"] + \
        " pip install mosaicml-streaming"


def test_hf_peer_rows_are_the_windows(dataset, tmp_path):
    from sdl.loader.bench.peers import hf_loader

    ds = TokenWindows(dataset, seq_len=TINY["seq_len"])
    rows = hf_loader(ds, 4, 0, 0, str(tmp_path)).dataset
    assert len(rows) == len(ds)
    for i in (0, 7, len(ds) - 1):
        window = ds[i]
        assert rows[i]["input_ids"].tolist() == window["input_ids"].tolist() + window["labels"][-1:].tolist()


def test_litdata_peer_reads_blocks_of_the_dataset_tokens(dataset, tmp_path):
    """LitData (optional: skipped where it is not installed) reads the dataset's own token stream, seq_len + 1 per item."""
    pytest.importorskip("litdata")
    import multiprocessing

    from sdl.loader.bench.peers import litdata_loader

    ds = TokenWindows(dataset, seq_len=TINY["seq_len"])
    start_method = multiprocessing.get_start_method(allow_none=True)
    batches = litdata_loader(ds, 4, 0, 0, str(tmp_path))
    assert multiprocessing.get_start_method(allow_none=True) == start_method  # LitData's optimize() forces its own
    stream = np.concatenate([np.load(ds.index.path_of(i)) for i in range(len(ds.index.sources))]).astype(np.int64)
    blocks = stream[: len(stream) // (ds.seq_len + 1) * (ds.seq_len + 1)].reshape(-1, ds.seq_len + 1)
    seen = [tuple(row) for batch in batches for row in batch.tolist()]
    assert len(seen) == len(set(seen)) >= len(blocks) - 4  # drop_last may leave out the last partial batch
    assert set(seen) <= {tuple(row) for row in blocks.tolist()}


def test_mosaic_peer_reads_every_block_of_the_dataset_tokens_once(dataset, tmp_path):
    """MosaicML Streaming (optional: skipped where it is not installed) reads the dataset's token stream, seq_len + 1 per row."""
    pytest.importorskip("streaming")
    from sdl.loader.bench.peers import close_mosaic, mosaic_loader

    ds = TokenWindows(dataset, seq_len=TINY["seq_len"])
    batches = mosaic_loader(ds, 4, 0, 0, str(tmp_path))
    stream = np.concatenate([np.load(ds.index.path_of(i)) for i in range(len(ds.index.sources))]).astype(np.int64)
    blocks = stream[: len(stream) // (ds.seq_len + 1) * (ds.seq_len + 1)].reshape(-1, ds.seq_len + 1)
    seen = [tuple(row) for batch in batches for row in batch["tokens"].tolist()]
    close_mosaic(batches)
    assert len(seen) == len(set(seen)) >= len(blocks) - 3  # drop_last may leave out the last partial batch
    assert set(seen) <= {tuple(row) for row in blocks.tolist()}


def test_unknown_peer_is_refused(dataset):
    with pytest.raises(ConfigError, match="not a known peer"):
        run_bench(BenchConfig(num_workers=0, peers=("nope",), **TINY), dataset)


def test_arrow_bench_reports_every_figure(tmp_path):
    from sdl.loader.bench.rows import run_arrow_bench

    report = run_arrow_bench(tmp_path, batch_size=4, batches=3, file_mb=1, many_files=3)
    access = report["row_access"]
    assert positive(access["sdl_ms"]) and positive(access["hf_ms"]) and access["sdl_vs_hf"] == pytest.approx(access["sdl_ms"] / access["hf_ms"])
    assert report["memory"]["big_file_mb"] == 10 * report["memory"]["small_file_mb"] == 1
    assert all(math.isfinite(report["memory"][key]) for key in ("small_anon_growth_mb", "big_anon_growth_mb"))
    for rates in (report["many_files"]["default"], report["many_files"]["max_open_64"]):
        assert rates["shuffled_vs_sequential"] == pytest.approx(rates["shuffled_batches_per_s"] / rates["sequential_batches_per_s"])
