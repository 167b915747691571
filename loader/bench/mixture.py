"""`sdl bench` of a Mixture: its loader against the same loader on its first source alone, and resume at 10^9 positions.

Throughput: the mixture (`shuffle=False`: the mixture is the order) and its first source alone (`shuffle=True`,
the usual single-dataset loader, which pays its own Feistel lookup), in process and with workers. The two are
measured alternately, ROUNDS times (which goes first alternates too), and the ratio is the median of the per-round
ratios, so that load from other processes on a shared machine hits both sides. Resume: a state at position 5·10^8 of a
10^9-position epoch of the same sources, loaded into a fresh loader (same weights, and other weights: a new
phase), to the first batch; tracemalloc peak of that.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sdl.loader.bench.measure import _rss_bytes, endless, throughput, time_batches
from sdl.loader.bench.report import BenchConfig
from sdl.loader.data.mixture import Mixture
from sdl.loader.runtime.loader import make_loader
from sdl.loader.sampling.sampler import ElasticSampler

ROUNDS = 5  # alternations of the two loaders: a median of 3 moved by ±0.1 between runs on a shared 2-core VM
RESUME_POSITIONS = 10**9
MIXTURE_CONFIG = ("batch_size", "num_workers", "steps", "warmup_steps", "seed")  # the BenchConfig fields a mixture bench reads
RATIO_TARGET = 0.9


@dataclass(frozen=True, kw_only=True, slots=True)
class MixtureBenchReport:
    config: dict[str, Any]
    sources: dict[str, Any]
    samples_per_s: dict[str, list[float]]   # reader -> one figure per round
    ratios: dict[str, float]                # "in_process" / "workers": median over rounds of mixture / single
    resume: dict[str, float]                # first-batch ms and tracemalloc MB, same and changed weights
    seconds: float
    target: float = RATIO_TARGET
    resume_positions: int = RESUME_POSITIONS
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(build: Callable[[], Any], config: BenchConfig, tick: Callable[[], None], itemsize: int) -> float:
    batches = endless(build())
    rate = throughput(time_batches(batches, config, tick)[0], config, itemsize).samples_per_s
    del batches
    return rate


def measure_mixture_throughput(mixture: Mixture, config: BenchConfig, tick: Callable[[], None]) -> tuple[dict, dict]:
    single = mixture.sources[0]
    rates: dict[str, list[float]] = {}
    ratios = {}
    for label, workers in (("in_process", 0), ("workers", config.num_workers)):
        if label == "workers" and workers == 0:
            continue
        for r in range(ROUNDS):
            pair = (("single", single, True), ("mixture", mixture, False))
            for name, dataset, shuffle in pair if r % 2 == 0 else pair[::-1]:
                rate = _rate(lambda: make_loader(dataset, config.batch_size, seed=config.seed, shuffle=shuffle, num_workers=workers,
                                                 device="cpu"), config, tick, 4)
                rates.setdefault(f"{name}_{label}", []).append(rate)
        rounds = zip(rates[f"mixture_{label}"], rates[f"single_{label}"])
        ratios[label] = statistics.median(m / s for m, s in rounds)
    return rates, ratios


def _resume_once(target: Mixture, saved: dict, config: BenchConfig) -> float:
    started = time.perf_counter()
    loader = make_loader(target, config.batch_size, seed=config.seed, shuffle=False, num_workers=0, device="cpu")
    loader.load_state_dict(saved)
    next(iter(loader))
    return (time.perf_counter() - started) * 1e3


def measure_mixture_resume(mixture: Mixture, config: BenchConfig) -> dict[str, float]:
    """A state half-way through a 10^9-position epoch loaded into a fresh loader, to its first batch (median of 3
    runs; tracemalloc, which slows Python down, on a fourth); the same weights, and other weights (a new phase)."""
    names = list(mixture.names)
    big = Mixture(dict(zip(names, mixture.sources)), weights=mixture.weights, num_samples=RESUME_POSITIONS)
    changed = {name: (1.0 if i else 2.0) for i, name in enumerate(names)}
    other = Mixture(dict(zip(names, mixture.sources)), weights=changed, num_samples=RESUME_POSITIONS)
    saved = ElasticSampler.for_dataset(big, config.batch_size, seed=config.seed, shuffle=False).state(
        RESUME_POSITIONS // config.batch_size // 2).to_dict()
    out = {}
    for label, target in (("same_weights", big), ("new_weights", other)):
        out[f"{label}_first_batch_ms"] = statistics.median(_resume_once(target, saved, config) for _ in range(ROUNDS))
        rss_before = _rss_bytes()
        tracemalloc.start()
        _resume_once(target, saved, config)
        out[f"{label}_tracemalloc_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        rss_after = _rss_bytes()
        out[f"{label}_rss_delta_mb"] = -1.0 if rss_before is None or rss_after is None else max(0, rss_after - rss_before) / 1e6
    return out


def run_mixture_bench(config: BenchConfig, mixture: Mixture, progress: Callable[[int, int], None] | None = None) -> MixtureBenchReport:
    started = time.perf_counter()
    total = ROUNDS * 2 * config.steps * (2 if config.num_workers else 1)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    rates, ratios = measure_mixture_throughput(mixture, config, tick)
    resume = measure_mixture_resume(mixture, config)
    sources = {name: {"weight": w, "num_samples": len(s), **_sample_shape(s)} for (name, w), s in zip(mixture.weights.items(), mixture.sources)}
    used = {key: value for key, value in asdict(config).items() if key in MIXTURE_CONFIG}  # the sources define the samples
    return MixtureBenchReport(config=used, sources=sources, samples_per_s=rates, ratios=ratios, resume=resume,
                              seconds=time.perf_counter() - started)


def _sample_shape(source: Any) -> dict[str, Any]:
    """What defines a source's samples, from its `describe()`: its kind and path, and a token dataset's windows."""
    described = source.describe() if hasattr(source, "describe") else {"kind": type(source).__name__}
    return {key: str(value) if key == "path" else value for key, value in described.items() if key in ("kind", "path", "seq_len", "stride")}
