"""`sdl bench-index`: time building, opening (from cache) and `locate` of the global index over many token shards."""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from sdl.loader.errors import ConfigError


def _best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_options(counts: dict[str, int], work_dir: Optional[Path]) -> None:
    """Every count > 0 and --dir an existing folder, refused before the synthetic dataset is written."""
    for flag, value in counts.items():
        if value <= 0:
            raise ConfigError(f"{flag} is {value}, expected a positive integer")
    if work_dir is not None and not work_dir.is_dir():
        found = "is a file" if work_dir.exists() else "does not exist"
        raise ConfigError(f"--dir {work_dir} {found}; expected an existing folder to hold the temporary dataset "
                          "(create it, or leave --dir out for the system's temp folder)")


def command(
    num_shards: int = typer.Option(10_000, "--num-shards", help="Token shards in the synthetic dataset."),
    tokens_per_shard: int = typer.Option(100, "--tokens-per-shard", help="Tokens per shard."),
    positions: int = typer.Option(1_000_000, "--positions", help="Positions per locate call."),
    repeats: int = typer.Option(5, "--repeats", help="Runs per figure; the median is reported."),
    work_dir: Optional[Path] = typer.Option(None, "--dir", help="Where to write the dataset (default: a temp folder)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Build < 2 s, open from cache < 50 ms, locate 1 M positions < 50 ms (targets for 10,000 shards)."""
    check_options({"--num-shards": num_shards, "--tokens-per-shard": tokens_per_shard, "--positions": positions,
                   "--repeats": repeats}, work_dir)
    import numpy as np
    from sdl.loader.index import build_index, open_index
    from sdl.prepare.synthetic import write_synthetic_dataset

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        root = Path(tmp) / "tokens"
        write_synthetic_dataset(root, num_tokens=num_shards * tokens_per_shard, tokens_per_shard=tokens_per_shard, vocab_size=50257)
        build_s = _best_of(repeats, lambda: build_index(root))
        open_s = _best_of(repeats, lambda: open_index(root))
        index = open_index(root)
        where = np.random.default_rng(0).integers(0, index.total, positions)
        index.locate(where)  # warm-up: first touch of the output pages
        locate_s = _best_of(repeats, lambda: index.locate(where))
    figures = {"num_shards": num_shards, "positions": positions, "build_ms": round(build_s * 1e3, 1),
               "open_ms": round(open_s * 1e3, 1), "locate_ms": round(locate_s * 1e3, 1),
               "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"}
    if json_out:
        typer.echo(json.dumps(figures, indent=2))
        return
    from sdl.cli.index import render

    render(figures, "sdl bench-index (median of runs)")
