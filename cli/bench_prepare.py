"""`sdl bench-prepare`: prepare() throughput vs the tokenizer's own batch encoding on the same text (and a peer's, with --peer), and peak RSS vs input size."""

from __future__ import annotations

import json

import typer
from sdl.loader.errors import ConfigError


def command(
    corpus_mb: float = typer.Option(24.0, "--corpus-mb", help="Size of the JSONL corpus (stdlib sources, cycled)."),
    rss_mb: float = typer.Option(4.0, "--rss-mb", help="Size of the small corpus of the peak-RSS pair (the other is 10x)."),
    max_proc: int = typer.Option(2, "--max-proc", help="Measure --num-proc 1 and this."),
    peer: str = typer.Option(None, "--peer", help="Also run a peer's pipeline on the same files and workers: litdata (pip install litdata)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Measure sdl prepare against the tokenizer alone (and a peer), in the same run (figures for BENCHMARKS.md)."""
    from rich.console import Console
    from rich.table import Table
    from sdl.prepare.bench import check_sizes, run_bench

    check_sizes({"--corpus-mb": corpus_mb, "--rss-mb": rss_mb}, {})
    if max_proc < 1:
        raise ConfigError(f"--max-proc is {max_proc}, expected a positive integer (the bench measures --num-proc 1 and this)")
    report = run_bench(corpus_mb=corpus_mb, rss_mb=rss_mb, num_procs=tuple(sorted({1, max_proc})), peer=peer)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(title=f"sdl prepare: {report.corpus_bytes / 1e6:.1f} MB JSONL, {report.num_tokens:,} tokens")
    peer_columns = (f"{peer} {report.peer_version} (tok/s)", f"sdl / {peer}") if peer else ()
    for column in ("num_proc", "tokenizer alone (tok/s)", "sdl prepare (tok/s)", "ratio", *peer_columns):
        table.add_column(column, justify="right")
    for num_proc, alone in report.tokenizer_tokens_per_s.items():
        ours = report.prepare_tokens_per_s[num_proc]
        theirs = report.peer_tokens_per_s.get(num_proc)
        peer_cells = (f"{theirs:,.0f}", f"{ours / theirs:.2f}x") if theirs else ()
        table.add_row(str(num_proc), f"{alone:,.0f}", f"{ours:,.0f}", f"{ours / alone:.0%}", *peer_cells)
    Console().print(table)
    Console().print(f"peak RSS: {report.peak_rss_mb['1x']} MB (1x) vs {report.peak_rss_mb['10x']} MB (10x input)")
