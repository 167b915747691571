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


def _best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def command(
    num_shards: int = typer.Option(10_000, "--num-shards", min=1, help="Token shards in the synthetic dataset."),
    tokens_per_shard: int = typer.Option(100, "--tokens-per-shard", min=1),
    positions: int = typer.Option(1_000_000, "--positions", min=1, help="Positions per locate call."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Runs per figure; the median is reported."),
    work_dir: Optional[Path] = typer.Option(None, "--dir", help="Where to write the dataset (default: a temp folder)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Build < 2 s, open from cache < 50 ms, locate 1 M positions < 50 ms (targets for 10,000 shards)."""
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
