"""`sdl bench s3://…`: one epoch from an object store through the node cache, against the same data on local disk.

Four kinds of epoch, each the whole dataset in the same `shuffle` order, batches on the host (num_workers=0, so the
cache counters of this process see every download; the prefetch thread runs as in training):
- **local**: the dataset downloaded to a temporary folder first, read from there (the reference);
- **cold, limited**: a fresh cache of `cache_fraction` of the dataset, each step followed by a simulated
  `step_ms` of compute (a sleep: a GPU step leaves the host CPU free): stall fraction, bytes fetched per epoch
  against the dataset's size, hit rate;
- **cold, unlimited**: a fresh cache without a limit, filled by this epoch;
- **warm**: a new dataset object (as a restarted job) over that filled cache: throughput vs local.
Local and warm epochs are short (a fraction of a second), so they run `repeats` times, alternated, and the
median epoch of each is reported (`epoch_seconds` lists them all): one epoch each measured the machine's
load as much as the loader (0.45-2.25x between runs on a shared 2-core machine).
Stall = total wait for batches / (wait + compute), the first batch excluded (reported apart).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdl.loader.data.windows import TokenWindows
from sdl.loader.errors import ConfigError
from sdl.loader.format.tokens import MANIFEST_NAME
from sdl.loader.index.remote import read_remote_manifest
from sdl.loader.runtime.loader import make_loader
from sdl.loader.storage import RemoteFiles
from sdl.loader.storage.cache import METADATA_BYTES


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteBenchConfig:
    seq_len: int = 2048
    batch_size: int = 16
    step_ms: float = 10.0
    cache_fraction: float = 0.3
    shuffle: str = "locality"
    block_size: int = 1024
    window_blocks: int = 2
    prefetch_steps: int = 64
    seed: int = 0
    repeats: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.cache_fraction <= 1:
            raise ConfigError(f"cache fraction is {self.cache_fraction!r}, expected a number in (0, 1]")
        if self.repeats < 1:
            raise ConfigError(f"repeats is {self.repeats!r}, expected at least 1 (local and warm epochs each)")


@dataclass(frozen=True, kw_only=True, slots=True)
class EpochRun:
    seconds: float
    samples_per_s: float
    steps: int
    stall_fraction: float | None
    first_batch_ms: float
    bytes_fetched: int
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float | None:
        opens = self.hits + self.misses
        return self.hits / opens if opens else None


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteBenchReport:
    url: str
    endpoint: str
    config: dict[str, Any]
    dataset_bytes: int
    num_shards: int
    num_samples: int
    cache_limit: int
    runs: dict[str, EpochRun]
    epoch_seconds: dict[str, list[float]]
    seconds: float

    @property
    def warm_vs_local(self) -> float:
        return self.runs["warm"].samples_per_s / self.runs["local"].samples_per_s

    @property
    def fetched_vs_dataset(self) -> float:
        return self.runs["cold_limited"].bytes_fetched / self.dataset_bytes

    def to_dict(self) -> dict[str, Any]:
        runs = {name: asdict(run) | {"hit_rate": run.hit_rate} for name, run in self.runs.items()}
        return {"version": 1, "url": self.url, "endpoint": self.endpoint, "config": self.config,
                "dataset_bytes": self.dataset_bytes, "num_shards": self.num_shards, "num_samples": self.num_samples,
                "cache_limit": self.cache_limit, "runs": runs, "epoch_seconds": self.epoch_seconds, "warm_vs_local": self.warm_vs_local,
                "fetched_vs_dataset": self.fetched_vs_dataset, "seconds": self.seconds}


def download_dataset(files: RemoteFiles, folder: Path) -> int:
    """Every file of the remote token dataset into `folder` (the "same data, local"); the bytes of its shards."""
    manifest, raw = read_remote_manifest(files)
    for shard in manifest.shards:
        for relative in filter(None, (shard.file, shard.docs_file)):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            with open(folder / relative, "wb") as handle:
                files.client.download(files.location.bucket, files.location.key(relative), handle)
    (folder / MANIFEST_NAME).write_bytes(raw)
    return sum((folder / shard.file).stat().st_size for shard in manifest.shards)


def check_cache_limit(local: Path, size: int, limit: int, fraction: float) -> None:
    """Refuse a limited cache that cannot hold the dataset's largest object (the cache would refuse it mid-epoch),
    naming the option that sizes it and the fraction that holds two of them (what a cache needs to work)."""
    largest = max(path.stat().st_size for path in local.rglob("*") if path.is_file() and path.name != MANIFEST_NAME)
    if limit < largest + METADATA_BYTES:
        wanted = min(1.0, math.ceil(100 * 2 * (largest + METADATA_BYTES) / size) / 100)
        raise ConfigError(f"--cache-fraction {fraction:g} gives the limited cache {limit:,} bytes of the {size:,}-byte "
                          f"dataset, less than one of its largest shards needs ({largest:,} bytes + {METADATA_BYTES:,} of "
                          f"cache metadata); give --cache-fraction {wanted:g} or more (two shards' worth)")


def run_epoch(dataset: TokenWindows, config: RemoteBenchConfig, step_ms: float) -> EpochRun:
    loader = make_loader(dataset, config.batch_size, seed=config.seed, shuffle=config.shuffle, num_workers=0, rank=0,
                         world_size=1, device="cpu", block_size=config.block_size, window_blocks=config.window_blocks)
    stats = dataset.remote.cache.stats if dataset.remote is not None else None
    before = (stats.hits, stats.misses, stats.bytes_fetched) if stats else (0, 0, 0)
    waits, steps, started = [], 0, time.perf_counter()
    batches = iter(loader)
    while True:
        asked = time.perf_counter()
        if next(batches, None) is None:
            break
        waits.append(time.perf_counter() - asked)
        steps += 1
        if step_ms:
            time.sleep(step_ms / 1e3)
    seconds = time.perf_counter() - started
    after = (stats.hits, stats.misses, stats.bytes_fetched) if stats else (0, 0, 0)
    waited = sum(waits[1:])
    stall = waited / (waited + (steps - 1) * step_ms / 1e3) if step_ms and steps > 1 else None
    return EpochRun(seconds=seconds, samples_per_s=steps * config.batch_size / seconds, steps=steps, stall_fraction=stall,
                    first_batch_ms=waits[0] * 1e3 if waits else 0.0, hits=after[0] - before[0],
                    misses=after[1] - before[1], bytes_fetched=after[2] - before[2])


def run_remote_bench(url: str, config: RemoteBenchConfig) -> RemoteBenchReport:
    """The epochs of the module docstring on the token dataset at `url`."""
    started = time.perf_counter()
    files = RemoteFiles(url)
    with tempfile.TemporaryDirectory(prefix="sdl-bench-s3-") as folder:
        local, cold, warm = Path(folder) / "local", Path(folder) / "cold", Path(folder) / "warm"
        local.mkdir()
        size = download_dataset(files, local)
        limit = int(config.cache_fraction * size)
        check_cache_limit(local, size, limit, config.cache_fraction)
        here = TokenWindows(local, config.seq_len)
        runs = {}
        limited = TokenWindows(url, config.seq_len, cache_dir=cold, cache_limit=limit, prefetch_steps=config.prefetch_steps)
        runs["cold_limited"] = run_epoch(limited, config, config.step_ms)
        unlimited = TokenWindows(url, config.seq_len, cache_dir=warm, prefetch_steps=config.prefetch_steps)
        runs["cold_unlimited"] = run_epoch(unlimited, config, 0.0)
        repeated: dict[str, list[EpochRun]] = {"local": [], "warm": []}
        for _ in range(config.repeats):
            repeated["local"].append(run_epoch(TokenWindows(local, config.seq_len), config, 0.0))
            again = TokenWindows(url, config.seq_len, cache_dir=warm, prefetch_steps=config.prefetch_steps)  # a new job
            repeated["warm"].append(run_epoch(again, config, 0.0))
        for name, epochs in repeated.items():
            runs[name] = sorted(epochs, key=lambda run: run.seconds)[len(epochs) // 2]
        runs = {name: runs[name] for name in ("local", "cold_limited", "cold_unlimited", "warm")}
    return RemoteBenchReport(url=url, endpoint=files.client.endpoint, config=asdict(config), dataset_bytes=size,
                             num_shards=len(here.index.sources), num_samples=len(here), cache_limit=limit, runs=runs,
                             epoch_seconds={name: [run.seconds for run in epochs] for name, epochs in repeated.items()},
                             seconds=time.perf_counter() - started)
