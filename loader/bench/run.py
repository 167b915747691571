"""`sdl bench`: sdl's loader measured against a plain baseline, an honest ceiling and memcpy, in one run.

Readers of the same windows (`seq_len` tokens every `stride`, labels shifted by 1):
- **sdl**: `make_loader(TokenWindows(...))`, a whole batch gathered per `__getitems__` (with workers:
  into their shared-memory ring);
- **baseline**: what a plain PyTorch user writes: a map-style Dataset over `np.memmap` returning one
  window per `__getitem__`, in `DataLoader(shuffle=True, batch_size=B, num_workers=same)`, default collate;
- **ceiling**: the same windows copied into one preallocated array of sdl's output layout and dtype the
  fastest way measured (one window-view gather per batch inside one shard, else per-row slice copies; then
  two casting copies), nothing else (`sdl.loader.bench.baseline.SliceCeiling`); the same into two arrays in
  turn (`ceiling_held`: the previous batch stays intact, as a loader's caller needs); row by row (`ceiling_per_row`:
  two casting slice copies a window, issue 14's definition, slower than the gather: a reference); and the memcpy bandwidth
  (`physical`), the limit of any reader: `memcpy_tokens_per_s` = bandwidth / output bytes per token;
- **peers** (`--peer`): other loaders on the same tokens (`sdl.loader.bench.peers`).
The readers take turns, ROUNDS times (the order reversed every other round), `steps` timed batches each a round;
a reader's figures are over all its rounds, and each ratio is the median over rounds of that round's ratio: the
load of other processes on a shared machine then falls on both sides of a ratio alike.
MB/s counts token bytes read from the shards (samples × seq_len × shard itemsize), the same for all.
`main_cpu_ms_per_batch` is the training process's CPU time per batch (its threads; workers excluded).
Data stall: each simulated step waits for its batch (the wait), then computes `step_ms`; the stall
fraction is total wait / total step time over the steps after `warmup_steps` (worker start-up excluded,
reported apart as `first_batch_ms`).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sdl.loader.bench.baseline import memcpy_gb_per_s
from sdl.loader.bench.measure import (
    READERS,
    endless,
    measure_resume,
    measure_resume_memory,
    measure_stall,
    measure_throughput,
    output_dtype,
    throughput,
    time_batches,
    timed_readers,
)
from sdl.loader.bench.peers import check_peers, run_peer
from sdl.loader.bench.report import (
    RESUME_FRACTIONS,
    ROUNDS,
    BenchConfig,
    BenchProgress,
    BenchReport,
)
from sdl.loader.data.windows import TokenWindows
from sdl.loader.runtime.feed import resolve_device

# The run -------------------------------------------------------------------------------------------------------


def bench_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(device)


def machine_info(device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "device": str(device), "gpu": gpu}


def run_bench(config: BenchConfig, dataset_path: str | Path,
              progress: Callable[[BenchProgress], None] | None = None) -> BenchReport:
    """Measure throughput, resume latency and memory, and data stall on the token dataset at `dataset_path`."""
    started = time.perf_counter()
    check_peers(config.peers)
    path = Path(dataset_path)
    device = bench_device(config.device)
    dataset = TokenWindows(path, config.seq_len, config.stride)
    resume_points = len(RESUME_FRACTIONS) * len({0, config.num_workers})
    readers = len(timed_readers(READERS, config.num_workers))
    total = (readers * ROUNDS + 2 * len(config.peers)) * config.steps + resume_points + 1 + 2 * config.steps
    done = [0, "throughput"]

    def tick(phase: str | None = None) -> None:
        done[0] += 1
        if progress is not None:
            progress(BenchProgress(phase=phase or done[1], completed=done[0], total=total))

    # Step: throughput of the three readers; then resume latency and memory; then data stall.
    measured, measured_ratios = measure_throughput(dataset, config, tick, device)
    itemsize = np.dtype(dataset.index.meta.get("dtype", "uint32")).itemsize

    def time_reader(loader: Any) -> Any:
        seconds, cpu_s = time_batches(endless(loader), config, tick)
        return throughput(seconds, config, itemsize, cpu_s)

    peers = {name: run_peer(name, dataset, config, time_reader) for name in config.peers}
    bandwidth = memcpy_gb_per_s()
    physical = {"memcpy_gb_per_s": bandwidth, "memcpy_tokens_per_s": bandwidth * 1e9 / (2 * output_dtype(device).itemsize)}
    done[1] = "resume"
    resume = measure_resume(dataset, config, tick)
    memory = measure_resume_memory(config)
    tick("resume memory")
    done[1] = "data stall"
    stalls, cuda = measure_stall(dataset, config, device, tick)
    meta = dataset.index.meta
    return BenchReport(
        config=asdict(config), machine=machine_info(device),
        dataset={"path": str(path), "synthetic": (meta.get("tokenizer") or {}).get("name") == "synthetic",
                 "num_tokens": dataset.index.total, "num_shards": len(dataset.index.sources), "dtype": meta.get("dtype"),
                 "num_samples": len(dataset), "seq_len": dataset.seq_len, "stride": dataset.stride},
        throughput=measured, ratios=measured_ratios, resume=resume, resume_memory=memory, stall=stalls, cuda=cuda,
        seconds=time.perf_counter() - started, physical=physical, peers=peers)
