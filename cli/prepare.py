"""`sdl prepare SOURCES… OUT`: raw corpus -> fixed-size token shards + manifest, with a progress bar and a summary table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer
from sdl.cli.options import given
from sdl.loader.errors import ConfigError


def command(
    paths: Optional[list[str]] = typer.Argument(None, help="SOURCES… OUT: files, folders, globs, stdlib:, save_to_disk folders or cached HF dataset names, then the output folder."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of defaults (e.g. configs/demo.toml); flags override it."),
    demo: bool = typer.Option(False, "--demo", help="Prepare the embedded default: this Python's stdlib sources, bundled tokenizer."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer folder, tokenizer.json, or HF name: cache, else download, as transformers does (default: bundled 8k BPE)."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="JSONL/Parquet/Arrow field holding the text (default: text)."),
    text_suffix: Optional[list[str]] = typer.Option(None, "--text-suffix", help="Read files with this suffix as plain text, one document each (default: .txt)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a HF dataset name or DatasetDict folder (default: train)."),
    tokens_per_shard: Optional[int] = typer.Option(None, "--tokens-per-shard", help="Tokens per shard (default: 100000000)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto|uint16|uint32 (default: auto)."),
    eos: Optional[bool] = typer.Option(None, "--eos/--no-eos", help="Append EOS after each document (default: on)."),
    bos: Optional[bool] = typer.Option(None, "--bos/--no-bos", help="Prepend BOS before each document (default: off)."),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", help="Stop after this many documents."),
    num_proc: Optional[int] = typer.Option(None, "--num-proc", help="Worker processes; the output is the same for any number (default: 1)."),
    num_jobs: Optional[int] = typer.Option(None, "--num-jobs", help="Split the input over this many independent jobs (default: 1)."),
    job_index: Optional[int] = typer.Option(None, "--job-index", help="Which job this is, 0 … num-jobs-1 (default: 0)."),
    on_error: Optional[str] = typer.Option(None, "--on-error", help="A malformed record: fail, or skip and count it (default: fail)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output: start afresh, even over a finished or other one."),
    repair: bool = typer.Option(False, "--repair", help="sdl prepare --repair OUT: rewrite only missing or damaged shards from the recorded inputs."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    """Tokenize a corpus into fixed-size token shards; re-run the same command to resume after an interruption."""
    from sdl.prepare import load_config_file, make_config, prepare

    options = {"--config": config, "--demo": demo, "--tokenizer": tokenizer, "--text-field": text_field, "--text-suffix": text_suffix,
               "--split": split, "--tokens-per-shard": tokens_per_shard, "--dtype": dtype, "--eos/--no-eos": eos,
               "--bos/--no-bos": bos, "--max-docs": max_docs, "--num-proc": num_proc, "--num-jobs": num_jobs,
               "--job-index": job_index, "--on-error": on_error, "--overwrite": overwrite}
    if repair:
        if others := given(options):
            raise ConfigError(f"--repair reruns OUT with the options its journal recorded and takes no others (got {', '.join(others)}); "
                              "drop them, or prepare afresh with --overwrite instead of --repair")
        return _repair(paths or [], as_json)

    base: dict[str, Any] = {}
    if demo:
        if len(paths or []) > 1:
            raise ConfigError(f"--demo prepares the embedded default (this Python's stdlib sources) into OUT; got {len(paths)} paths "
                              f"({' '.join(paths)}): give only OUT, or drop --demo to prepare your own sources")
        base.update(_demo_options())
    if config is not None:
        base.update(load_config_file(config))
    flags = dict(tokenizer=tokenizer, text_field=text_field, text_suffixes=tuple(text_suffix) if text_suffix else None, split=split,
                 tokens_per_shard=tokens_per_shard, dtype=dtype, append_eos=eos, prepend_bos=bos, max_docs=max_docs,
                 num_proc=num_proc, num_jobs=num_jobs, job_index=job_index, on_error=on_error, overwrite=overwrite or None)
    flags.update(_split_paths(paths or [], has_sources="sources" in base))
    settings = make_config(base, flags)
    report = prepare(settings) if as_json else _with_progress(prepare, settings)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_summary(report)


def _repair(paths: list[str], as_json: bool) -> None:
    from sdl.prepare import repair

    if len(paths) != 1:
        raise ConfigError(f"--repair takes one path, the output folder to repair (got {len(paths)}); e.g. sdl prepare --repair data/tokens")
    report = repair(paths[0])
    if report.rewritten:  # the rewritten shards are newer than the index: refresh it
        from sdl.loader.index import build_index

        build_index(Path(report.out), kind="tokens")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif report.rewritten:
        typer.echo(f"repaired {report.out}: rewrote {len(report.rewritten)} of {report.num_shards} shards ({', '.join(report.rewritten)}); "
                   "index rebuilt")
    else:
        typer.echo(f"{report.out}: all {report.num_shards} shards match the manifest; nothing to repair")


def _demo_options() -> dict[str, Any]:
    from sdl.prepare.demo import DEMO_OPTIONS

    return dict(DEMO_OPTIONS)


def _split_paths(paths: list[str], has_sources: bool) -> dict[str, Any]:
    """SOURCES… OUT from the positional arguments; with sources from --config/--demo, one argument is OUT."""
    if len(paths) >= 2:
        return {"sources": tuple(paths[:-1]), "out": paths[-1]}
    if len(paths) == 1 and has_sources:
        return {"out": paths[0]}
    if len(paths) == 1:
        raise ConfigError(f"got one path ({paths[0]}); expected SOURCES… OUT — the inputs, then the output folder")
    return {}


def _with_progress(prepare: Any, settings: Any) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:  # logs and pipes get the summary only
        return prepare(settings)
    columns = (TextColumn("preparing"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"))
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("prepare", total=None, stats="")

        def update(p: Any) -> None:
            seconds = max(time.perf_counter() - started, 1e-9)
            stats = (f"{p.num_docs:,} docs  {p.num_tokens:,} tokens  {p.num_tokens / seconds / 1e6:.2f} M tok/s  "
                     f"{p.num_bytes / seconds / 1e6:.1f} MB/s")
            bar.update(task, total=p.total_bytes or None, completed=min(p.num_bytes, p.total_bytes), stats=stats)

        return prepare(settings, progress=update)


def _print_summary(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sdl prepare: {report.status}{' (resumed)' if report.resumed else ''}", show_header=False)
    rows = [("output", report.out), ("documents", f"{report.num_docs:,}"), ("tokens", f"{report.num_tokens:,}"),
            ("shards", f"{report.num_shards:,} × ≤{report.tokens_per_shard:,} tokens ({report.dtype})"),
            ("skipped records", f"{report.num_skipped:,}"), ("inputs", f"{report.num_sources:,} files, {report.input_bytes / 1e6:,.1f} MB"),
            ("tokenizer", f"{report.tokenizer['name']} (vocab {report.tokenizer['vocab_size']:,})"),
            ("job", f"{report.job['job_index']} of {report.job['num_jobs']}"), ("time", f"{report.seconds:.1f} s"),
            ("throughput", f"{report.tokens_per_second / 1e6:.2f} M tokens/s")]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
