"""`sdl bench --arrow`: ArrowRows against HF datasets on the same rows, memory against file size, and a shuffle over
160 Arrow files against sequential order (`sdl.loader.bench.rows`), on synthetic save_to_disk folders."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer


def arrow_bench(json_out: bool) -> None:
    """`--arrow`: the Arrow measurements (sdl.loader.bench.rows) on synthetic save_to_disk folders in a temp folder."""
    import contextlib
    import io

    from sdl.loader.bench.rows import run_arrow_bench

    with tempfile.TemporaryDirectory(prefix="sdl-bench-arrow-") as folder, contextlib.redirect_stderr(io.StringIO()):
        report = run_arrow_bench(Path(folder))  # (datasets' progress bars go to the discarded stderr)
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return
    access, memory, many = report["row_access"], report["memory"], report["many_files"]
    typer.echo(f"row access, {access['batch_size']} random rows of a {access['file_mb']} MB file: sdl {access['sdl_ms']:.3f} ms, "
               f"HF datasets {access['hf_ms']:.3f} ms: {access['sdl_vs_hf']:.2f}x (target <= 2x)")
    typer.echo(f"private memory growth: {memory['small_anon_growth_mb']:.1f} MB on a {memory['small_file_mb']:g} MB file, "
               f"{memory['big_anon_growth_mb']:.1f} MB on a {memory['big_file_mb']:g} MB file (target: flat)")
    for name, rates in (("default", many["default"]), ("max_open=64", many["max_open_64"])):
        typer.echo(f"{many['files']} files, {name}: shuffled {rates['shuffled_batches_per_s']:,.0f} batches/s, sequential "
                   f"{rates['sequential_batches_per_s']:,.0f}: {rates['shuffled_vs_sequential']:.2f}x (target >= 0.3x)")
