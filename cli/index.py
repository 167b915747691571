"""`sdl index PATH`: build or refresh the cached global index (joining job folders), optionally validate everything."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import typer
from sdl.cli.options import given, refuse_ignored
from sdl.loader.errors import FormatError, InputError


def resolve_root(path: Optional[str], hf: Optional[str], hf_cache: Optional[Path], hf_config: Optional[str]) -> Path | str:
    """The dataset folder: PATH (kept a string when it is `s3://…`), or the Arrow folder of `--hf NAME` in the local
    HF datasets cache."""
    if (path is None) == (hf is None):
        raise InputError("give a dataset PATH or --hf NAME (exactly one)")
    if hf is None:
        refuse_ignored(given({"--hf-cache": hf_cache, "--hf-config": hf_config}), ("only applies", "only apply"),
                       f"to --hf NAME (a dataset in the HF cache), not to PATH {path}", "drop {them}")
    if hf is not None:
        from sdl.loader.index.hf_cache import find_hf_dataset

        return find_hf_dataset(hf, cache_dir=hf_cache, config=hf_config)
    if path.startswith("s3://"):
        return path
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; expected a token dataset, zarr arrays or Arrow files")
    return path


def disk_bytes(index: Any) -> int | None:
    """Bytes on disk of the indexed data (for zarr, every file of every store)."""
    if index.root.startswith("s3://"):
        return None  # not summed: a remote token dataset is indexed from its manifest alone
    if index.kind != "zarr":
        return int(index.sources.sizes.sum())
    total = 0
    for rel in index.sources.paths:
        for dirpath, _, files in os.walk(Path(index.root) / rel):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def index_summary(index: Any, build_s: float) -> dict[str, Any]:
    meta = index.meta
    summary = {"path": index.root, "kind": index.kind, "sources": len(index.sources), "items": index.total,
               "size_bytes": disk_bytes(index), "build_s": round(build_s, 4), "identity": index.identity}
    if index.kind == "tokens":
        summary |= {"tokens": index.total, "documents": meta.get("num_docs"), "dtype": meta["dtype"],
                    "tokenizer": meta["tokenizer"].get("name"), "vocab_size": meta.get("vocab_size"),
                    "parts": len(meta.get("parts", [])) or None}
    elif index.kind == "zarr":
        summary["fields"] = meta["fields"]
    else:
        summary |= {"columns": meta["schema"], "split": meta.get("split")}
    return summary


def render(summary: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)


def command(
    path: Optional[str] = typer.Argument(None, help="Token dataset, folder of zarr stores, Arrow folder (each a folder or s3://bucket/prefix), or the parent of job folders."),
    kind: Optional[str] = typer.Option(None, "--kind", help="tokens | zarr | arrow (default: detected)."),
    hf: Optional[str] = typer.Option(None, "--hf", help="A dataset in the local HF datasets cache (never downloads)."),
    hf_cache: Optional[Path] = typer.Option(None, "--hf-cache", help="HF datasets cache folder (default: $HF_DATASETS_CACHE)."),
    hf_config: Optional[str] = typer.Option(None, "--hf-config", help="Config of the --hf dataset, when it has several."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of an Arrow dataset holding several."),
    validate_: bool = typer.Option(False, "--validate", help="Read every byte: checksums, lengths, dtype, ids, chunks, batches."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Build or refresh the cached index of a dataset and print a summary; --validate reads everything."""
    from sdl.loader.index import build_index, cache_path
    from sdl.loader.index.join import is_job_parent, join_jobs
    from sdl.loader.index.zarr import chunks_gone_since

    root = resolve_root(path, hf, hf_cache, hf_config)
    if kind in (None, "tokens") and hf is None and isinstance(root, Path) and is_job_parent(root):
        join_jobs(root)
    elif isinstance(root, str) and kind in (None, "tokens"):
        from sdl.loader.index.remote_join import join_remote_jobs

        join_remote_jobs(root)  # job prefixes (sdl prepare --num-jobs to s3://) are joined like job folders
    report = run_validation(root, kind, split, json_out) if validate_ else None  # before any cache is written
    previous = _cached_json(root, split) if isinstance(root, Path) else None
    start, written_after = time.perf_counter(), time.time_ns()
    index = build_index(root, kind=kind, split=split)
    warn_chunks_gone(root, chunks_gone_since(previous, index))
    summary = index_summary(index, time.perf_counter() - start)
    if isinstance(root, Path):  # a read-only folder or a full disk: the dataset opens, rebuilding the index each time
        cached = cache_path(root, split)
        summary["cache"] = str(cached) if cached.is_file() and cached.stat().st_mtime_ns >= written_after - 10**9 else None
        if summary["cache"] is None:
            typer.echo(f"warning: could not write the index cache {cached} (a read-only folder, or a full disk); every open "
                       "of the dataset rebuilds the index from its files: make the folder writable and run sdl index again",
                       err=True)
    if report is not None:
        summary["validation"] = report.to_dict()
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    render({k: v for k, v in summary.items() if k != "validation"}, f"sdl index {root}")
    if report is not None:
        typer.echo(f"valid: {report.num_sources:,} sources, {report.bytes_read:,} bytes read")


def _cached_json(root: Path, split: Optional[str]) -> Any:
    """The dataset's index cache as it was before this run (None when missing or unreadable): to compare with."""
    from sdl.loader.index import cache_path

    try:
        return json.loads(cache_path(root, split).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
        return None


def warn_chunks_gone(root: Path | str, gone: dict[str, list[str]]) -> None:
    """One warning line per zarr array with chunks the last index found and this one records as absent (fill value)."""
    for array, keys in gone.items():
        shown = ", ".join(repr(key) for key in keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        typer.echo(f"warning: {root}/{array}: chunk(s) {shown} existed at the last sdl index and are gone; the index now "
                   "records them as all fill value (how zarr reads a missing chunk). If they were lost rather than emptied on "
                   f"purpose, restore them and run sdl index {root} again", err=True)


def run_validation(root: Path | str, kind: Optional[str], split: Optional[str], json_out: bool) -> Any:
    """Read every byte; on failures print the report (--json) and raise one `error:` line per failure, writing nothing."""
    from sdl.loader.index.validation import validate_dataset

    report = validate_dataset(root, kind, split=split)
    if report.ok:
        return report
    if json_out:
        typer.echo(json.dumps({"path": str(root), "kind": report.kind, "validation": report.to_dict()}, indent=2))
    raise FormatError("\nerror: ".join(str(failure) for failure in report.failures))  # main() prints `error: ` + this, exits 1
