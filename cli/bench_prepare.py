"""`sdl bench-prepare`: prepare() throughput vs the tokenizer's own batch encoding on the same text, and peak RSS vs input size."""

from __future__ import annotations

import json

import typer


def command(
    corpus_mb: float = typer.Option(24.0, "--corpus-mb", help="Size of the JSONL corpus (stdlib sources, cycled)."),
    rss_mb: float = typer.Option(4.0, "--rss-mb", help="Size of the small corpus of the peak-RSS pair (the other is 10x)."),
    max_proc: int = typer.Option(2, "--max-proc", help="Measure --num-proc 1 and this."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Measure sdl prepare against the tokenizer alone, in the same run (figures for BENCHMARKS.md)."""
    from rich.console import Console
    from rich.table import Table

    from sdl.prepare.bench import run_bench

    report = run_bench(corpus_mb=corpus_mb, rss_mb=rss_mb, num_procs=tuple(sorted({1, max_proc})))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(title=f"sdl prepare: {report.corpus_bytes / 1e6:.1f} MB JSONL, {report.num_tokens:,} tokens")
    for column in ("num_proc", "tokenizer alone (tok/s)", "sdl prepare (tok/s)", "ratio"):
        table.add_column(column, justify="right")
    for num_proc, alone in report.tokenizer_tokens_per_s.items():
        ours = report.prepare_tokens_per_s[num_proc]
        table.add_row(str(num_proc), f"{alone:,.0f}", f"{ours:,.0f}", f"{ours / alone:.0%}")
    Console().print(table)
    Console().print(f"peak RSS: {report.peak_rss_mb['1x']} MB (1x) vs {report.peak_rss_mb['10x']} MB (10x input)")
