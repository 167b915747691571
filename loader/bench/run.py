"""`sdl bench`: sdl's loader measured against a plain baseline and a numpy gather ceiling, in one run.

Three readers of the same windows (`seq_len` tokens every `stride`, labels shifted by 1):
- **sdl**: `make_loader(TokenWindows(...))`, a whole batch gathered per `__getitems__`;
- **baseline**: what a plain PyTorch user writes: a map-style Dataset over `np.memmap` returning one
  window per `__getitem__`, in `DataLoader(shuffle=True, batch_size=B, num_workers=same)`, default collate;
- **numpy gather** (ceiling): the windows of the same sample ids fancy-indexed out of a single
  memory-mapped shard into a preallocated array, nothing else.
MB/s counts token bytes read from the shards (samples × seq_len × shard itemsize), the same for all three.
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

import torch
from sdl.loader.bench.measure import (
    measure_resume,
    measure_resume_memory,
    measure_stall,
    measure_throughput,
    ratios,
)
from sdl.loader.bench.report import (
    RESUME_FRACTIONS,
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
    path = Path(dataset_path)
    device = bench_device(config.device)
    dataset = TokenWindows(path, config.seq_len, config.stride)
    resume_points = len(RESUME_FRACTIONS) * len({0, config.num_workers})
    total = 5 * config.steps + resume_points + 1 + 2 * config.steps
    done = [0, "throughput"]

    def tick(phase: str | None = None) -> None:
        done[0] += 1
        if progress is not None:
            progress(BenchProgress(phase=phase or done[1], completed=done[0], total=total))

    # Step: throughput of the three readers; then resume latency and memory; then data stall.
    measured = measure_throughput(dataset, config, tick)
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
        throughput=measured, ratios=ratios(measured), resume=resume, resume_memory=memory, stall=stalls, cuda=cuda,
        seconds=time.perf_counter() - started)
