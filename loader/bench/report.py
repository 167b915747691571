"""The bench's configuration and report: what `sdl bench` measures, as frozen dataclasses (`--json` is `to_dict()`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sdl.loader.errors import ConfigError

REPORT_VERSION = 1
RESUME_FRACTIONS = (0.01, 0.5, 0.99)
ROUNDS = 5  # turns each reader takes in `sdl bench` (ratios: the median over rounds; one 200-step round of sdl is ~10 ms)


CLI_FIELDS = ("seq_len", "stride", "batch_size", "num_workers", "steps", "device", "step_ms")  # set by sdl bench's options


def flag(name: str) -> str:
    """A BenchConfig field as an error names it: with its `sdl bench` option when it has one."""
    return f"{name} (sdl bench --{name.replace('_', '-')})" if name in CLI_FIELDS else name


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchConfig:
    seq_len: int = 2048
    stride: int | None = None              # None: seq_len (windows tile the stream)
    batch_size: int = 16
    num_workers: int = 2
    steps: int = 200                       # timed batches per reader and round, and simulated training steps per stall run
    warmup_steps: int = 5                  # batches read (and steps run) before timing starts
    device: str = "auto"                   # auto: cuda when available, else cpu
    step_ms: float = 10.0                  # simulated compute per training step
    seed: int = 0
    resume_memory_samples: int = 10**9
    peers: tuple[str, ...] = ()            # --peer: other loaders run on the same tokens in the same run

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "steps", "resume_memory_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{flag(name)} is {value!r}, expected a positive integer")
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride <= 0):
            raise ConfigError(f"{flag('stride')} is {self.stride!r}, expected a positive integer (or none for seq_len)")
        for name in ("num_workers", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)} is {getattr(self, name)}, expected >= 0")
        if not self.step_ms >= 0:
            raise ConfigError(f"{flag('step_ms')} is {self.step_ms!r}, expected a number of milliseconds >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"{flag('device')} is {self.device!r}, expected auto, cpu or cuda")


@dataclass(frozen=True, kw_only=True, slots=True)
class Throughput:
    samples_per_s: float
    tokens_per_s: float
    mb_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    batches: int
    main_cpu_ms_per_batch: float | None = None  # CPU of the training process (its threads), per batch
    rounds: tuple[float, ...] = ()  # samples/s of each round, when the reader took turns with others (see ROUNDS)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResumeLatency:
    fraction: float
    cursor: int
    num_workers: int
    first_batch_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ResumeMemory:
    num_samples: int
    tracemalloc_peak_mb: float
    rss_delta_mb: float | None
    first_batch_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Stall:
    stall_fraction: float
    mean_wait_ms: float
    p99_wait_ms: float
    mean_step_ms: float
    first_batch_ms: float
    steps: int
    gpu_utilisation: float | None = None
    wait_ms: tuple[float, ...] = field(default=(), repr=False)
    compute_ms: tuple[float, ...] = field(default=(), repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class CudaFigures:
    h2d_gb_per_s: float | None = None
    copy_compute_overlap: float | None = None
    gpu_utilisation_sdl: float | None = None
    gpu_utilisation_baseline: float | None = None
    matmuls_per_step: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchReport:
    config: dict[str, Any]
    machine: dict[str, Any]
    dataset: dict[str, Any]
    throughput: dict[str, Throughput | None]
    ratios: dict[str, float | None]
    resume: tuple[ResumeLatency, ...]
    resume_memory: ResumeMemory
    stall: dict[str, Stall]
    cuda: CudaFigures
    seconds: float
    physical: dict[str, float] = field(default_factory=dict)  # memcpy_gb_per_s, memcpy_tokens_per_s: the limit
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)  # --peer: per peer, version and throughputs

    def to_dict(self) -> dict[str, Any]:
        return {"version": REPORT_VERSION, **asdict(self)}


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchProgress:
    phase: str
    completed: int
    total: int
