"""The embedded default corpus: the running interpreter's standard-library sources, with the bundled tokenizer, offline."""

from __future__ import annotations

from pathlib import Path

from sdl.prepare.config import PrepareConfig
from sdl.prepare.sources import STDLIB_SPEC, stdlib_files

# 1,200 files (~5.4 M tokens) take ~8 s with 2 processes on 2 cores; configs/demo.toml holds the same values.
DEMO_OPTIONS = {"sources": (STDLIB_SPEC,), "max_docs": 1200, "tokens_per_shard": 1_000_000, "on_error": "skip", "num_proc": 2}


def demo_sources() -> list[Path]:
    """The files the demo reads: the stdlib's `.py` sources, sorted by path (site-packages excluded)."""
    return stdlib_files()


def demo_config(out: str | Path, **overrides) -> PrepareConfig:
    """The demo's PrepareConfig writing to `out` (what `sdl prepare --demo OUT` and `sdl demo` run)."""
    return PrepareConfig(**{**DEMO_OPTIONS, "out": str(out), **overrides})
