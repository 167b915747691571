"""sdl.loader.bench: `sdl bench` — the loader against a plain baseline and a ceiling in one run, and the GPU monitor."""

from sdl.loader.bench.report import BenchConfig, BenchProgress, BenchReport
from sdl.loader.bench.run import run_bench

__all__ = ["BenchConfig", "BenchProgress", "BenchReport", "run_bench"]
