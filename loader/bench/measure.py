"""The bench's measurements: throughput of the three readers, resume latency and memory, and data stall."""

from __future__ import annotations

import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from sdl.loader.bench.baseline import SliceCeiling, baseline_loader
from sdl.loader.bench.report import (
    RESUME_FRACTIONS,
    ROUNDS,
    BenchConfig,
    CudaFigures,
    ResumeLatency,
    ResumeMemory,
    Stall,
    Throughput,
)
from sdl.loader.data.windows import TokenWindows
from sdl.loader.errors import ConfigError
from sdl.loader.runtime.loader import make_loader
from sdl.loader.sampling.sampler import ElasticSampler


def endless(loader: Any) -> Iterator[Any]:
    """Batches of `loader`, epoch after epoch (a short dataset must not end a timed run)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the dataset holds fewer windows than one batch; use a larger dataset or a smaller batch")


# Measurements ------------------------------------------------------------------------------------------------


def time_batches(batches: Iterator[Any], config: BenchConfig, tick: Callable[[], None]) -> tuple[list[float], float]:
    """Seconds per batch for `config.steps` batches, after `config.warmup_steps` untimed ones; and this process's CPU
    seconds over them (its threads included; DataLoader workers are other processes)."""
    for _ in range(config.warmup_steps):
        next(batches)
    seconds = []
    cpu_started = time.process_time()
    for _ in range(config.steps):
        started = time.perf_counter()
        next(batches)
        seconds.append(time.perf_counter() - started)
        tick()
    return seconds, time.process_time() - cpu_started


def throughput(seconds: list[float], config: BenchConfig, itemsize: int, cpu_s: float | None = None,
               rounds: tuple[float, ...] = ()) -> Throughput:
    samples_per_s = len(seconds) * config.batch_size / sum(seconds)
    tokens_per_s = samples_per_s * config.seq_len
    latency_ms = np.asarray(seconds) * 1e3
    return Throughput(samples_per_s=samples_per_s, tokens_per_s=tokens_per_s, mb_per_s=tokens_per_s * itemsize / 1e6,
                      latency_p50_ms=float(np.percentile(latency_ms, 50)), latency_p99_ms=float(np.percentile(latency_ms, 99)),
                      batches=len(seconds), main_cpu_ms_per_batch=None if cpu_s is None else cpu_s / len(seconds) * 1e3,
                      rounds=rounds)


def sample_batches(dataset: Any, config: BenchConfig) -> list[np.ndarray]:
    """The sample ids of sdl's own order for the timed run (computed outside any timed call)."""
    sampler = ElasticSampler(len(dataset), config.batch_size, seed=config.seed, fingerprint=dataset.identity)
    return [np.asarray(batch, dtype=np.int64) for _, batch in zip(range(config.steps + config.warmup_steps), endless(sampler))]


def ceiling_batches(dataset: TokenWindows, config: BenchConfig, dtype: Any, buffers: int = 1,
                    per_row: bool = False) -> Iterator[np.ndarray]:
    """The same windows copied into `buffers` preallocated arrays (in turn) of sdl's output layout and dtype (`SliceCeiling`;
    `per_row`: issue 14's per-row definition, a reference)."""
    ceiling = SliceCeiling(dataset, config.batch_size, dtype, buffers, per_row)
    planned = [ceiling.plan(batch) for batch in sample_batches(dataset, config)]
    return (ceiling.gather(batch) for batch in _cycle(planned))


def _cycle(items: list[Any]) -> Iterator[Any]:
    while True:
        yield from items


def output_dtype(device: torch.device) -> np.dtype:
    """The dtype of sdl's host batches: int64 when they stay on the CPU, int32 (widened on the GPU) for CUDA."""
    return np.dtype(np.int64) if device.type == "cpu" else np.dtype(np.int32)


def measure_throughput(dataset: TokenWindows, config: BenchConfig, tick: Callable[[], None],
                       device: torch.device | None = None) -> tuple[dict[str, Throughput | None], dict[str, float | None]]:
    """Each reader's throughput over ROUNDS rounds of `config.steps` timed batches, and the ratios between them (see
    `ratios`). The readers take turns, the order reversed every other round, so that load from other processes on a
    shared machine falls on all of them alike; sdl's readers and the ceilings run next to each other."""
    itemsize = np.dtype(dataset.index.meta.get("dtype", "uint32")).itemsize
    device = device or torch.device("cpu")
    readers: dict[str, Callable[[], Iterator[Any]]] = {  # each: the batches of one reader, endlessly
        "sdl_in_process": lambda: endless(make_loader(dataset, config.batch_size, seed=config.seed, num_workers=0, device=device)),
        "ceiling": lambda: ceiling_batches(dataset, config, output_dtype(device)),
        "ceiling_held": lambda: ceiling_batches(dataset, config, output_dtype(device), buffers=2),
        "ceiling_per_row": lambda: ceiling_batches(dataset, config, output_dtype(device), per_row=True),
        "sdl_workers": lambda: endless(make_loader(dataset, config.batch_size, seed=config.seed,
                                                   num_workers=config.num_workers, device=device)),
        "baseline_in_process": lambda: endless(baseline_loader(dataset, config.batch_size, config.seed, 0)),
        "baseline_workers": lambda: endless(baseline_loader(dataset, config.batch_size, config.seed, config.num_workers)),
    }
    names = timed_readers(READERS, config.num_workers)
    timed: dict[str, list[tuple[list[float], float]]] = {name: [] for name in names}
    for r in range(ROUNDS):
        for name in names if r % 2 == 0 else names[::-1]:
            batches = readers[name]()
            timed[name].append(time_batches(batches, config, tick))
            del batches  # shuts the workers down before the next reader starts
    results: dict[str, Throughput | None] = {name: None for name in READERS}
    for name, rounds in timed.items():
        per_round = tuple(throughput(seconds, config, itemsize, cpu_s) for seconds, cpu_s in rounds)
        results[name] = throughput([s for seconds, _ in rounds for s in seconds], config, itemsize,
                                   sum(cpu_s for _, cpu_s in rounds), rounds=tuple(t.samples_per_s for t in per_round))
        timed[name] = per_round  # type: ignore[assignment]
    return results, ratios(timed)  # type: ignore[arg-type]


READERS = ("sdl_in_process", "ceiling", "ceiling_held", "ceiling_per_row", "sdl_workers", "baseline_in_process",
           "baseline_workers")  # the order of a round: sdl's readers and the ceilings next to each other


def timed_readers(names: Any, num_workers: int) -> list[str]:
    """The readers of `names` that `measure_throughput` times: those with workers only when there are workers."""
    return [name for name in names if num_workers > 0 or not name.endswith("_workers")]


RATIOS = {"sdl_vs_baseline_in_process": ("sdl_in_process", "baseline_in_process"), "sdl_vs_ceiling": ("sdl_in_process", "ceiling"),
          "sdl_vs_held_ceiling": ("sdl_in_process", "ceiling_held"), "sdl_vs_per_row_ceiling": ("sdl_in_process", "ceiling_per_row"),
          "sdl_vs_baseline_workers": ("sdl_workers", "baseline_workers"), "sdl_workers_vs_in_process": ("sdl_workers", "sdl_in_process")}


def ratios(rounds: dict[str, tuple[Throughput, ...]]) -> dict[str, float | None]:
    """Each ratio as the median over rounds of that round's ratio (a round's readers ran next to each other); the
    training process's CPU per batch, with workers against in process, likewise."""
    def median_ratio(a: str, b: str, of: Callable[[Throughput], float]) -> float | None:
        x, y = rounds.get(a), rounds.get(b)
        return None if not x or not y else statistics.median(of(p) / of(q) for p, q in zip(x, y))

    out = {key: median_ratio(a, b, lambda t: t.samples_per_s) for key, (a, b) in RATIOS.items()}
    out["main_cpu_workers_vs_in_process"] = median_ratio("sdl_workers", "sdl_in_process", lambda t: t.main_cpu_ms_per_batch)
    return out


def measure_resume(dataset: TokenWindows, config: BenchConfig, tick: Callable[[], None]) -> tuple[ResumeLatency, ...]:
    """Construct a loader, load a state saved at 1%, 50%, 99% of the epoch, take the first batch: with and without workers."""
    sampler = ElasticSampler(len(dataset), config.batch_size, seed=config.seed, fingerprint=dataset.identity,
                             dataset_info=dataset.describe())
    results = []
    for num_workers in sorted({0, config.num_workers}):
        for fraction in RESUME_FRACTIONS:
            state = sampler.state(min(len(sampler) - 1, int(fraction * len(sampler))))
            started = time.perf_counter()
            loader = make_loader(dataset, config.batch_size, seed=config.seed, num_workers=num_workers)
            loader.load_state_dict(state.to_dict())
            batches = iter(loader)
            next(batches)
            elapsed_ms = (time.perf_counter() - started) * 1e3
            del batches, loader
            results.append(ResumeLatency(fraction=fraction, cursor=state.cursor, num_workers=num_workers, first_batch_ms=elapsed_ms))
            tick()
    return tuple(results)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def measure_resume_memory(config: BenchConfig) -> ResumeMemory:
    """Memory of restoring a state at the middle of a `resume_memory_samples`-sample epoch and taking one step."""
    num_samples = config.resume_memory_samples
    saved = ElasticSampler(num_samples, config.batch_size, seed=config.seed).state(num_samples // config.batch_size // 2)
    rss_before = _rss_bytes()
    tracemalloc.start()
    started = time.perf_counter()
    sampler = ElasticSampler(num_samples, config.batch_size, seed=config.seed)
    sampler.load_state_dict(saved.to_dict())
    next(iter(sampler))
    elapsed_ms = (time.perf_counter() - started) * 1e3
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = _rss_bytes()
    rss_delta = None if rss_before is None or rss_after is None else max(0, rss_after - rss_before) / 1e6
    return ResumeMemory(num_samples=num_samples, tracemalloc_peak_mb=peak / 1e6, rss_delta_mb=rss_delta, first_batch_ms=elapsed_ms)


def busy_step(step_ms: float) -> Callable[[Any], None]:
    """A simulated CPU training step: `step_ms` of 256×256 matmuls on one intra-op thread.

    Like a real forward/backward pass it occupies a core and releases the GIL while it computes, so the
    loader's receiving thread can work during the step. (A pure-Python spin loop would hold the GIL
    and measure the interpreter's 5 ms switch interval, not the loader.)
    """
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def step(_batch: Any) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            end = time.perf_counter() + step_ms / 1e3
            while time.perf_counter() < end:
                torch.mm(a, b)
        finally:
            torch.set_num_threads(threads)
    return step


def run_steps(batches: Iterator[Any], step: Callable[[Any], None], config: BenchConfig, tick: Callable[[], None],
              move: Callable[[Any], Any] | None = None, monitor: Any = None) -> Stall:
    """Wait for a batch (and `move` it, for the synchronous baseline), compute; per-step wait and compute times."""
    waits, computes, first_ms = [], [], 0.0
    for i in range(config.warmup_steps + config.steps):
        if i == config.warmup_steps and monitor is not None:
            monitor.start()
        started = time.perf_counter()
        batch = next(batches)
        if move is not None:
            batch = move(batch)
        waited = time.perf_counter()
        step(batch)
        done = time.perf_counter()
        if i == 0:
            first_ms = (waited - started) * 1e3
        if i >= config.warmup_steps:
            waits.append((waited - started) * 1e3)
            computes.append((done - waited) * 1e3)
            tick()
    utilisation = monitor.stop() if monitor is not None else None
    total = sum(waits) + sum(computes)
    return Stall(stall_fraction=sum(waits) / total if total > 0 else 0.0, mean_wait_ms=float(np.mean(waits)),
                 p99_wait_ms=float(np.percentile(waits, 99)), mean_step_ms=total / len(waits), first_batch_ms=first_ms,
                 steps=len(waits), gpu_utilisation=utilisation, wait_ms=tuple(waits), compute_ms=tuple(computes))


def measure_stall(dataset: TokenWindows, config: BenchConfig, device: torch.device, tick: Callable[[], None]) -> tuple[dict[str, Stall], CudaFigures]:
    """sdl (workers + device feed) vs the baseline (workers, synchronous `.to(device)`), the same simulated step."""
    cuda = device.type == "cuda"
    if cuda:
        from sdl.loader.bench.gpu_monitor import MatmulStep, UtilisationMonitor

        step: Callable[[Any], None] = MatmulStep(device, config.step_ms)
        monitors = [UtilisationMonitor(device.index or 0), UtilisationMonitor(device.index or 0)]
    else:
        step, monitors = busy_step(config.step_ms), [None, None]
    sdl = make_loader(dataset, config.batch_size, seed=config.seed, num_workers=config.num_workers, device=device)
    stalls = {"sdl": run_steps(endless(sdl), step, config, tick, monitor=monitors[0])}
    del sdl
    sync = (lambda batch: {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    stalls["baseline"] = run_steps(endless(baseline_loader(dataset, config.batch_size, config.seed, config.num_workers)), step, config, tick,
                                   move=sync, monitor=monitors[1])
    if not cuda:
        return stalls, CudaFigures()
    from sdl.loader.bench.gpu_monitor import (
        copy_compute_overlap,
        host_to_device_gb_per_s,
    )

    batch_bytes = 2 * config.batch_size * config.seq_len * 4
    return stalls, CudaFigures(h2d_gb_per_s=host_to_device_gb_per_s(device, batch_bytes),
                               copy_compute_overlap=copy_compute_overlap(device, step, batch_bytes),
                               gpu_utilisation_sdl=stalls["sdl"].gpu_utilisation,
                               gpu_utilisation_baseline=stalls["baseline"].gpu_utilisation, matmuls_per_step=step.repeats)
