"""`sdl bench [DATASET]`: sdl's loader against a plain baseline, the copy ceiling, memcpy and peers; table, --json or --plot."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from sdl.cli.options import given, on_command_line, refuse_ignored
from sdl.loader.errors import ConfigError

# (ratio key, label, target, higher is better): the loader's targets (issues 4, 6, 14), shown next to what was measured.
RATIO_TARGETS = (("sdl_vs_baseline_in_process", "sdl / baseline, in process", 2.0, True),
                 ("sdl_vs_ceiling", "sdl / copy ceiling, in process", 0.9, True),
                 ("sdl_vs_held_ceiling", "sdl / copy ceiling holding the previous batch, in process", None, True),
                 ("sdl_vs_per_row_ceiling", "sdl / per-row slice copies (issue 14's ceiling), in process", None, True),
                 ("sdl_vs_baseline_workers", "sdl / baseline, with workers", 3.0, True),
                 ("sdl_workers_vs_in_process", "sdl with workers / in process", 0.5, True),
                 ("main_cpu_workers_vs_in_process", "training-process CPU per batch, workers / in process", 1.0, False))
STALL_TARGET = 0.01
SYNTHETIC_VOCAB = 100_000              # > 65,535: uint32 shards, as issue 4's target
SYNTHETIC_TOKENS_PER_SHARD = 100_000_000  # sdl prepare's default: the default dataset is one shard
RESUME_TARGET_MS = 10.0
LOADER_OPTIONS = ("seq_len", "stride", "batch_size", "num_workers", "steps", "device", "step_ms", "plot", "peer")
REMOTE_OPTIONS = ("cache_fraction", "block_size", "window_blocks", "prefetch_steps")
MIXTURE_STEPS = 5000  # a mixture bench's --steps unless given: rounds long enough to tell 0.9x from 0.95x (~0.2-0.4 s)


def command(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Argument(None, help="A token dataset (default: a synthetic one of --tokens tokens in a temp folder), "
                                            "a mixture config (configs/mix-*.toml), or s3://bucket/prefix: the object-store "
                                            "bench (a synthetic dataset is uploaded there when it holds none)."),
    tokens: int = typer.Option(2**25, "--tokens", help="Size of the synthetic dataset, in tokens (uint32)."),
    seq_len: int = typer.Option(2048, "--seq-len", help="Tokens per sample."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Tokens between window starts (default: seq_len)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Samples per batch."),
    num_workers: int = typer.Option(2, "--num-workers", help="DataLoader workers, for sdl and the baseline alike."),
    steps: int = typer.Option(200, "--steps", help="Timed batches per reader and simulated training steps per stall run (a mixture bench: 5,000)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    step_ms: float = typer.Option(10.0, "--step-ms", help="Simulated compute per training step, in ms."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON (no progress bar, no table)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the per-step timeline (data wait vs compute) to FILE.png."),
    mixture: bool = typer.Option(False, "--mixture", help="Bench a 2-source mixture (75/25) of two synthetic datasets."),
    peer: list[str] = typer.Option([], "--peer", help="Also run a peer loader on the same tokens: torchdata, hf, litdata, mosaic (repeatable; optional installs)."),
    arrow: bool = typer.Option(False, "--arrow", help="Instead: ArrowRows vs HF datasets on the same rows, memory vs file size, a shuffle over 160 files vs sequential."),
    cache_fraction: Optional[float] = typer.Option(None, "--cache-fraction", help="s3://: the limited cache, as a fraction of the dataset (default: 0.3)."),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="s3://: samples per block of the locality shuffle (default: 1024)."),
    window_blocks: Optional[int] = typer.Option(None, "--window-blocks", help="s3://: blocks shuffled together, locality shuffle (default: 2)."),
    prefetch_steps: Optional[int] = typer.Option(None, "--prefetch-steps", help="s3://: steps the prefetcher runs ahead (default: 64)."),
) -> None:
    """Measure throughput, resume latency and memory, and the data stall of a simulated training step."""
    from sdl.loader.bench import BenchConfig, run_bench

    applies = ("does not apply", "do not apply")
    if arrow:
        if dataset is not None or mixture:
            raise ConfigError(f"--arrow measures Arrow folders it writes itself; it takes no {'DATASET' if dataset else '--mixture'} "
                              f"({dataset or '--mixture'}): drop one of them")
        refuse_ignored(on_command_line(ctx, *LOADER_OPTIONS, "tokens", *REMOTE_OPTIONS), applies,
                       "to --arrow (its rows, files and readers are fixed)", "drop {them}")
        from sdl.cli.bench_arrow import arrow_bench

        return arrow_bench(json_out)
    remote = {"cache_fraction": cache_fraction, "block_size": block_size, "window_blocks": window_blocks,
              "prefetch_steps": prefetch_steps}  # the object-store bench's own options (None: its defaults)
    if dataset is not None and dataset.startswith("s3://"):
        from sdl.cli.bench_remote import bench_remote

        refuse_ignored(on_command_line(ctx, "stride", "num_workers", "steps", "device", "plot", "peer", "mixture"), applies,
                       "to the object-store bench (an s3:// DATASET: epochs in process, local against cached)", "drop {them}")
        return bench_remote(dataset, tokens, seq_len, batch_size, step_ms, {k: v for k, v in remote.items() if v is not None},
                            json_out, tokens_given=bool(on_command_line(ctx, "tokens")))
    refuse_ignored(given({f"--{name.replace('_', '-')}": value for name, value in remote.items()}), ("only applies", "only apply"),
                   "to an s3:// DATASET (the object-store bench)", "drop {them} or give s3://bucket/prefix")
    toml = dataset is not None and Path(dataset).suffix == ".toml"
    if mixture or toml:
        refuse_ignored(on_command_line(ctx, "device", "step_ms", "plot", "peer", *(("tokens",) if toml else ())),
                       applies, "to a mixture bench" + (" of a config (its sources define the samples)" if toml else ""), "drop {them}")
        if toml:  # --seq-len and --stride only as the config gives them
            from sdl.cli.bench_mixture import check_config_windows

            windows = dict(zip(("--seq-len", "--stride"), (seq_len, stride)))
            check_config_windows(Path(dataset), {flag: windows[flag] for flag in on_command_line(ctx, "seq_len", "stride")})
    elif dataset is not None:
        refuse_ignored(on_command_line(ctx, "tokens"), applies, "with a DATASET (it sizes the synthetic one)", "drop {them}")
    dataset = Path(dataset) if dataset is not None else None
    if dataset is not None and not dataset.exists():
        raise ConfigError(f"{dataset}: no such dataset folder; give a token dataset written by sdl prepare, or no DATASET for a synthetic one")
    if plot is not None:
        _require_matplotlib()
    config = BenchConfig(seq_len=seq_len, stride=stride, batch_size=batch_size, num_workers=num_workers,
                         steps=steps, device=device, step_ms=step_ms, peers=tuple(peer))
    if mixture or (dataset is not None and dataset.suffix == ".toml"):
        return bench_mixture(config if on_command_line(ctx, "steps") else replace(config, steps=MIXTURE_STEPS), dataset, tokens, json_out)
    with _dataset_or_synthetic(dataset, tokens) as path:
        report = run_bench(config, path) if json_out else _with_progress(run_bench, config, path)
    if plot is not None:
        draw_timeline(report, plot)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render(report, plot)


@contextmanager
def _dataset_or_synthetic(dataset: Optional[Path], tokens: int) -> Iterator[Path]:
    """DATASET as given, or a synthetic uint32 dataset of `tokens` tokens (token at p is p % vocab) in a temp folder."""
    if dataset is not None:
        yield dataset
        return
    if tokens <= 0:
        raise ConfigError(f"--tokens is {tokens}, expected a positive number of tokens")
    from sdl.prepare.synthetic import write_synthetic_dataset

    with tempfile.TemporaryDirectory(prefix="sdl-bench-") as folder:
        write_synthetic_dataset(folder, num_tokens=tokens, tokens_per_shard=SYNTHETIC_TOKENS_PER_SHARD, vocab_size=SYNTHETIC_VOCAB)
        yield Path(folder)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError("--plot needs matplotlib, which is not installed; "
                          "pip install 'streaming-dataloader[plot]' (or pip install matplotlib), or drop --plot") from None


def _with_progress(run_bench: Any, config: Any, dataset: Optional[Path]) -> Any:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("bench: {task.description:<12}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("dataset", total=None)

        def update(event: Any) -> None:
            bar.update(task, description=event.phase, completed=event.completed, total=event.total)

        return run_bench(config, dataset, progress=update)


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def _verdict(ok: bool) -> str:
    return "[bold green]met[/]" if ok else "[bold red]missed[/]"


def render(report: Any, plot: Optional[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    data, machine = report.dataset, report.machine
    console.print(f"[bold]sdl bench[/] · {data['num_samples']:,} windows of {data['seq_len']} tokens ({data['dtype']}, "
                  f"{data['num_shards']} shard(s){', synthetic' if data['synthetic'] else ''}) · batch {report.config['batch_size']} · "
                  f"{report.config['num_workers']} workers · {machine['cpu_count']} CPUs · device {machine['device']}")
    table = Table(title="Throughput")
    for column in ("reader", "samples/s", "tokens/s", "MB/s", "p50 ms", "p99 ms", "CPU ms"):
        table.add_column(column, justify="left" if column == "reader" else "right")
    readers = list(report.throughput.items()) + [(f"{name} {label.replace('_', ' ')}", result) for name, peer in report.peers.items()
                                                 for label, result in peer.items() if label in ("in_process", "workers")]
    for name, result in readers:
        if result is not None:
            table.add_row(name.replace("_", " "), _fmt(result.samples_per_s, 0), _fmt(result.tokens_per_s / 1e6, 1, " M"),
                          _fmt(result.mb_per_s), _fmt(result.latency_p50_ms, 3), _fmt(result.latency_p99_ms, 3),
                          _fmt(result.main_cpu_ms_per_batch, 3))
    console.print(table)
    for name, peer in report.peers.items():
        if "skipped" in peer:
            console.print(f"peer {name}: skipped, {peer['skipped']}")
    if report.physical:
        console.print(f"memcpy: {report.physical['memcpy_gb_per_s']:.1f} GB/s = {report.physical['memcpy_tokens_per_s'] / 1e6:,.0f} M "
                      "tokens/s of sdl's output (the physical limit)")
    ratios = Table(title="Ratios (same run)")
    for column in ("ratio", "measured", "target", ""):
        ratios.add_column(column, justify="left" if column == "ratio" else "right")
    for key, label, target, higher in RATIO_TARGETS:
        value = report.ratios.get(key)
        if value is not None:
            if target is None:  # context for the targets, none of its own
                ratios.add_row(label, f"[bold]{value:.2f}×[/]", "", "")
                continue
            ok = value >= target if higher else value <= target
            ratios.add_row(label, f"[bold]{value:.2f}×[/]", f"{'≥' if higher else '≤'} {target:g}×", _verdict(ok))
    console.print(ratios)
    _render_resume_and_stall(console, report)
    if plot is not None:
        console.print(f"timeline drawn to {plot}")
    console.print(f"[dim]{report.seconds:.1f} s[/]")


def _render_resume_and_stall(console: Any, report: Any) -> None:
    from rich.table import Table

    resume = Table(title=f"Resume: construct loader + load_state_dict → first batch (target < {RESUME_TARGET_MS:g} ms)")
    for column in ("workers", "at 1%", "at 50%", "at 99%"):
        resume.add_column(column, justify="right")
    for workers in sorted({r.num_workers for r in report.resume}):
        rows = [r for r in report.resume if r.num_workers == workers]
        resume.add_row(str(workers), *(_fmt(r.first_batch_ms, 2, " ms") for r in rows))
    console.print(resume)
    memory = report.resume_memory
    console.print(f"Resume memory at {memory.num_samples:,} samples: tracemalloc peak {memory.tracemalloc_peak_mb:.3f} MB, "
                  f"RSS delta {_fmt(memory.rss_delta_mb, 1, ' MB')} (target < 50 MB) {_verdict(memory.tracemalloc_peak_mb < 50)}")
    stall = Table(title=f"Data stall: {report.config['step_ms']:g} ms simulated step, fraction of step time waiting for data")
    for column in ("loader", "stall", "mean wait ms", "p99 wait ms", "first batch ms", "GPU util %"):
        stall.add_column(column, justify="left" if column == "loader" else "right")
    for name, result in report.stall.items():
        shown = f"[bold]{result.stall_fraction:.1%}[/]" if name == "sdl" else f"{result.stall_fraction:.1%}"
        stall.add_row(name, shown, _fmt(result.mean_wait_ms, 2), _fmt(result.p99_wait_ms, 2), _fmt(result.first_batch_ms, 1),
                      _fmt(result.gpu_utilisation, 1))
    console.print(stall)
    console.print(f"sdl stall < {STALL_TARGET:.0%}: {_verdict(report.stall['sdl'].stall_fraction < STALL_TARGET)}")
    cuda = report.cuda
    if cuda.h2d_gb_per_s is not None:
        console.print(f"CUDA: host→device {cuda.h2d_gb_per_s:.1f} GB/s · copy/compute overlap {cuda.copy_compute_overlap:.0%} · "
                      f"{cuda.matmuls_per_step} matmuls per step")


def draw_timeline(report: Any, path: Path) -> None:
    """Per-step bars: data wait (red) stacked under compute (grey), sdl above the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True, sharey=True)
    for axis, name in zip(axes, ("sdl", "baseline")):
        result = report.stall[name]
        steps = range(len(result.wait_ms))
        axis.bar(steps, result.wait_ms, width=1.0, color="tab:red", label="data wait")
        axis.bar(steps, result.compute_ms, width=1.0, bottom=result.wait_ms, color="0.7", label="compute")
        axis.set_title(f"{name}: stall {result.stall_fraction:.1%}")
        axis.set_ylabel("ms")
    axes[0].legend(loc="upper right")
    axes[-1].set_xlabel("training step")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def bench_mixture(config: Any, path: Optional[Path], tokens: int, json_out: bool) -> None:
    """`sdl bench CONFIG.toml` / `--mixture`: the mixture's loader against its first source alone, and resume at 10^9."""
    from contextlib import ExitStack

    from sdl.loader.bench.mixture import run_mixture_bench
    from sdl.loader.data.mixture import Mixture
    from sdl.loader.data.mixture_config import read_mixture_config
    from sdl.loader.data.windows import TokenWindows

    with ExitStack() as stack:
        if path is not None:
            mix = read_mixture_config(path).build()
        else:  # two synthetic sources: web of --tokens tokens, code of a third of that
            web, code = (stack.enter_context(_dataset_or_synthetic(None, n)) for n in (tokens, max(1, tokens // 3)))
            mix = Mixture({"web": TokenWindows(web, config.seq_len, config.stride),
                           "code": TokenWindows(code, config.seq_len, config.stride)}, weights={"web": 0.75, "code": 0.25})
        report = run_mixture_bench(config, mix)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render_mixture(report)


def render_mixture(report: Any) -> None:
    import statistics

    from rich.console import Console
    from rich.table import Table
    from sdl.loader.bench.mixture import ROUNDS

    console, config = Console(), report.config
    mixed = ", ".join(f"{name} {info['weight']:.3g} ({info['num_samples']:,} samples)" for name, info in report.sources.items())
    console.print(f"[bold]sdl bench[/] · mixture {mixed} · batch {config['batch_size']} · {config['num_workers']} workers")
    table = Table(title=f"Mixture vs its first source alone (samples/s, median of {ROUNDS} alternating rounds)")
    for column in ("loader", "single source", "mixture", "ratio", "target", ""):
        table.add_column(column, justify="left" if column == "loader" else "right")
    for label, ratio in report.ratios.items():
        single, mixed_rate = (statistics.median(report.samples_per_s[f"{n}_{label}"]) for n in ("single", "mixture"))
        table.add_row(label.replace("_", " "), f"{single:,.0f}", f"{mixed_rate:,.0f}", f"[bold]{ratio:.2f}×[/]",
                      f"≥ {report.target:g}×", _verdict(ratio >= report.target))
    console.print(table)
    for label in ("same_weights", "new_weights"):
        ms, mb = report.resume[f"{label}_first_batch_ms"], report.resume[f"{label}_tracemalloc_mb"]
        console.print(f"Resume at position {report.resume_positions // 2:,} of {report.resume_positions:,} ({label.replace('_', ' ')}): "
                      f"{ms:.2f} ms to the first batch, tracemalloc peak {mb:.3f} MB "
                      f"(targets < {RESUME_TARGET_MS:g} ms, < 50 MB) {_verdict(ms < RESUME_TARGET_MS and mb < 50)}")
