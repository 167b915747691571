"""`sdl bench s3://…`: the object-store bench (sdl.loader.bench.remote), its table, and the synthetic upload."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import typer

SYNTHETIC_TOKENS_PER_SHARD = 1 << 20  # 4 MB uint32 shards: several per dataset, so a 30% cache holds a few


def upload_synthetic(url: str, tokens: int, tokens_given: bool = False) -> None:
    """A synthetic uint32 dataset of `tokens` tokens written to `url` (the bucket created when missing), unless `url`
    holds a dataset already: then `tokens_given` (--tokens on the command line) is refused, as it would be ignored."""
    from sdl.loader.errors import ConfigError
    from sdl.loader.storage import S3Client, S3Location
    from sdl.prepare.synthetic import write_synthetic_dataset

    location, client = S3Location.parse(url), S3Client()
    if client.head(location.bucket, location.key("manifest.json")) is not None:
        if tokens_given:
            raise ConfigError(f"--tokens sizes the synthetic dataset uploaded to a prefix that holds none, and {url} holds one; "
                              "drop --tokens, or give an empty prefix")
        return
    try:
        client.client.create_bucket(Bucket=location.bucket)
    except Exception:  # noqa: BLE001 - it exists (or we may not create it: the upload below says why)
        pass
    with tempfile.TemporaryDirectory(prefix="sdl-bench-") as folder:
        write_synthetic_dataset(folder, num_tokens=tokens, tokens_per_shard=SYNTHETIC_TOKENS_PER_SHARD, vocab_size=100_000)
        for path in sorted(Path(folder).glob("shard-*.npy")) + [Path(folder) / "manifest.json"]:  # manifest last
            client.upload_file(path, location.bucket, location.key(path.name))


def bench_remote(url: str, tokens: int, seq_len: int, batch_size: int, step_ms: float, options: dict[str, Any],
                 json_out: bool, tokens_given: bool = False) -> None:
    """`options`: RemoteBenchConfig fields given on the command line (cache_fraction, block_size, ...)."""
    from sdl.loader.bench.remote import RemoteBenchConfig, run_remote_bench

    config = RemoteBenchConfig(seq_len=seq_len, batch_size=batch_size, step_ms=step_ms, **options)
    upload_synthetic(url, tokens, tokens_given)
    report = run_remote_bench(url, config)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render_remote(report)


def render_remote(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]sdl bench[/] {report.url} at {report.endpoint} · {report.num_samples:,} windows · "
                  f"{report.num_shards} shards, {report.dataset_bytes / 1e6:,.1f} MB · shuffle {report.config['shuffle']} "
                  f"(block {report.config['block_size']}, window {report.config['window_blocks']})")
    table = Table(title=f"One epoch each (local, warm: the median of {report.config['repeats']})")
    for column in ("epoch", "samples/s", "fetched / dataset", "hit rate", f"stall ({report.config['step_ms']:g} ms step)", "first batch ms"):
        table.add_column(column, justify="left" if column == "epoch" else "right")
    for name, run in report.runs.items():
        label = {"cold_limited": f"cold, cache {report.cache_limit / 1e6:,.1f} MB"}.get(name, name.replace("_", " "))
        table.add_row(label, f"{run.samples_per_s:,.0f}", f"{run.bytes_fetched / report.dataset_bytes:.2f}×",
                      "—" if run.hit_rate is None else f"{run.hit_rate:.0%}",
                      "—" if run.stall_fraction is None else f"{run.stall_fraction:.1%}", f"{run.first_batch_ms:.1f}")
    console.print(table)
    console.print(f"warm cache / local: [bold]{report.warm_vs_local:.2f}×[/] (target ≥ 0.9×) · cold {report.config['cache_fraction']:.0%}: fetched "
                  f"{report.fetched_vs_dataset:.2f}× the dataset (target ≤ 1.2×), stall "
                  f"{report.runs['cold_limited'].stall_fraction or 0:.1%} (target < 5%) · {report.seconds:.1f} s")
