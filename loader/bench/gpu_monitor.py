"""GPU-side measurements of `sdl bench`: NVML utilisation sampled in a thread, a matmul step of a given length,
host→device bandwidth and copy/compute overlap. NVML comes from `nvidia-ml-py` (the `gpu` extra); without it
the utilisation is None, never an error."""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

MATMUL_SIZE = 4096  # a square bf16 matmul this size keeps an H100 busy ~0.1 ms; the step repeats it


class UtilisationMonitor:
    """Samples the GPU's utilisation (percent) every `interval_s` in a daemon thread between start() and stop()."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.01) -> None:
        self.device_index, self.interval_s = device_index, interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(device_index)
        except Exception:  # no nvidia-ml-py, no driver, or no permission: utilisation stays None
            self._nvml = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def start(self) -> UtilisationMonitor:
        if self.available:
            self.samples, self._stop = [], threading.Event()
            self._thread = threading.Thread(target=self._run, name="sdl-bench-nvml", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def stop(self) -> float | None:
        """Mean utilisation over the samples taken, or None without NVML (or without samples)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        return sum(self.samples) / len(self.samples) if self.samples else None


class MatmulStep:
    """A simulated training step on CUDA: a loop of square matmuls whose count is calibrated to `step_ms`."""

    def __init__(self, device: torch.device, step_ms: float) -> None:
        self.device = device
        self.a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=torch.bfloat16)
        self.b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=torch.bfloat16)
        per_matmul_ms = self._time_matmuls(20) / 20
        self.repeats = max(1, round(step_ms / per_matmul_ms))

    def _time_matmuls(self, count: int) -> float:
        self._matmuls(3)
        torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        self._matmuls(count)
        torch.cuda.synchronize(self.device)
        return (time.perf_counter() - started) * 1e3

    def _matmuls(self, count: int) -> None:
        for _ in range(count):
            torch.mm(self.a, self.b)

    def __call__(self, batch: Any) -> None:
        """Compute that reads the batch (so it must have arrived), then the matmuls; returns when the GPU is done."""
        if isinstance(batch, dict) and isinstance(batch.get("input_ids"), torch.Tensor):
            batch["input_ids"].sum()
        self._matmuls(self.repeats)
        torch.cuda.synchronize(self.device)


def host_to_device_gb_per_s(device: torch.device, num_bytes: int, repeats: int = 20) -> float:
    """Bandwidth of `num_bytes` copies from pinned host memory, as the device feed issues them."""
    host = torch.empty(max(num_bytes, 1 << 20), dtype=torch.uint8).pin_memory()
    target = torch.empty_like(host, device=device)
    target.copy_(host, non_blocking=True)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(host, non_blocking=True)
    torch.cuda.synchronize(device)
    return host.numel() * repeats / (time.perf_counter() - started) / 1e9


def copy_compute_overlap(device: torch.device, step: MatmulStep, num_bytes: int, copies: int = 8) -> float:
    """How much of the copy time hides behind compute: 1 = fully overlapped, 0 = serialised.

    Times the matmul step alone, `copies` side-stream copies alone, then both issued together (copies on
    a side stream, as the device feed does); overlap = (alone_compute + alone_copy - together) / min(both).
    """
    host = torch.empty(max(num_bytes, 1 << 20), dtype=torch.uint8).pin_memory()
    target = torch.empty_like(host, device=device)
    side = torch.cuda.Stream(device=device)

    def copy_all() -> None:
        with torch.cuda.stream(side):
            for _ in range(copies):
                target.copy_(host, non_blocking=True)

    def timed(work: Any) -> float:
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        work()
        torch.cuda.synchronize(device)
        return time.perf_counter() - started

    timed(copy_all)
    compute = timed(lambda: step._matmuls(step.repeats))
    copy = timed(copy_all)
    together = timed(lambda: (copy_all(), step._matmuls(step.repeats)))
    hidden = compute + copy - together
    return float(min(1.0, max(0.0, hidden / min(compute, copy))))
