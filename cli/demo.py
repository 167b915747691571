"""`sdl demo`: the whole path offline on the embedded corpus; prints what each step did and proved; exit 1 if exactly-once fails."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer


def command(
    out: Optional[Path] = typer.Option(None, "--out", help="Keep the dataset and checkpoints here (default: a temp folder, removed)."),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", help="Cap the corpus at N stdlib files (default: the embedded 1,200)."),
    seq_len: int = typer.Option(512, "--seq-len", help="Tokens per training sample."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per rank per step."),
    bench_steps: int = typer.Option(50, "--bench-steps", help="Batches per reader in the closing bench (0 skips it)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON instead of the step-by-step story."),
) -> None:
    """Prepare → index + validate → train on 4 ranks → reshard to 3 → resume → verify exactly-once → bench."""
    from dataclasses import replace

    from sdl.cli.walkthrough import DemoConfig, run_demo

    # Step: the options are checked before anything is prepared (a bad one would otherwise fail minutes in).
    config = DemoConfig(out=str(out), max_docs=max_docs, seq_len=seq_len, batch_size=batch_size, bench_steps=bench_steps)

    def run(folder: Path) -> Any:
        return run_demo(replace(config, out=str(folder)), on_step=None if json_out else _print_step)

    if out is not None:
        report = run(out)
    else:
        with tempfile.TemporaryDirectory(prefix="sdl-demo-") as folder:
            report = run(Path(folder) / "corpus")
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_verdict(report, kept=out is not None)
    if not report.ok:
        raise typer.Exit(1)


def _print_step(step: Any) -> None:
    from rich.console import Console

    mark = "[bold green]✓[/]" if step.ok else "[bold red]✗[/]"
    console = Console(highlight=False)
    console.print(f"{mark} [bold]{step.name}[/] [dim]({step.seconds:.1f} s)[/]")
    console.print(f"    did:    {step.did}")
    console.print(f"    {'proved' if step.name != 'bench' else 'found'}: {step.proved}", style=None if step.ok else "bold red")


def _print_verdict(report: Any, kept: bool) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    verdict = report.verdict
    if report.ok:
        console.print(f"[bold green]PASS[/] every one of the {verdict.num_samples - verdict.dropped:,} samples of the epoch was "
                      f"delivered exactly once across 4 ranks, a checkpoint, a reshard and 3 ranks ({report.seconds:.1f} s)")
    elif verdict is None:
        console.print("[bold red]FAIL[/] the saved loader states were refused, so the epoch could not be resumed; see the steps above")
    else:
        console.print(f"[bold red]FAIL[/] {verdict.repeated} repeated, {verdict.missing} missing "
                      f"(expected {verdict.dropped} dropped); see the steps above")
    if kept:
        console.print(f"dataset and checkpoints kept in {report.out}; try: sdl inspect {report.out}, "
                      f"sdl reshard-ckpt {report.out}/checkpoints/world4")
