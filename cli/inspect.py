"""`sdl inspect PATH`: what a dataset holds — sources, tokens, documents, windows for a seq_len/stride, decoded samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from sdl.cli.index import render, resolve_root
from sdl.cli.options import given, refuse_ignored
from sdl.loader.errors import ConfigError, FormatError


def _ascending_inside(docs: Any, length: int) -> bool:
    return not len(docs) or bool(docs[0] >= 0 and docs[-1] < length and not (docs[1:] < docs[:-1]).any())


def document_stats(index: Any) -> dict[str, Any]:
    """Documents and their mean/max length: exact from the docs files when every shard has one, else the mean only."""
    import numpy as np
    from sdl.loader.format.tokens import read_docs, read_manifest

    num_docs, num_tokens = index.meta.get("num_docs") or 0, index.total
    manifest = None if index.root.startswith("s3://") else read_manifest(index.root)  # remote: counts only, no docs files
    if manifest and manifest.shards and all(s.docs_file for s in manifest.shards):
        starts = [read_docs(Path(index.root) / s.docs_file, s.num_docs) + index.offsets[i] for i, s in enumerate(manifest.shards)]
        starts = np.concatenate(starts).astype(np.int64)
        if len(starts) and bool((starts[1:] < starts[:-1]).any() or starts[0] < 0 or starts[-1] >= num_tokens):
            bad = next(s.docs_file for i, s in enumerate(manifest.shards) if not _ascending_inside(
                read_docs(Path(index.root) / s.docs_file, s.num_docs), int(index.offsets[i + 1] - index.offsets[i])))
            raise FormatError(f"{bad}: expected ascending document starts inside its shard, found others: the file is "
                              f"damaged; run `sdl prepare --repair {index.root}` to rewrite it")
        lengths = np.diff(np.append(starts, num_tokens)) if len(starts) else np.zeros(0)
        return {"documents": len(starts), "mean_doc_len": round(float(lengths.mean()), 1) if len(lengths) else None,
                "max_doc_len": int(lengths.max()) if len(lengths) else None}
    return {"documents": num_docs, "mean_doc_len": round(num_tokens / num_docs, 1) if num_docs else None, "max_doc_len": None}


def read_tokens(index: Any, start: int, count: int) -> Any:
    """Tokens [start, start + count) of the stream, across shard boundaries (a numpy array)."""
    import numpy as np
    from sdl.loader.format.tokens import open_shard
    from sdl.loader.index import group_by_source

    positions = np.arange(start, start + count, dtype=np.int64)
    source_ids, offsets = index.locate(positions)
    out = np.empty(count, dtype=index.meta["dtype"])
    remote = None
    if index.root.startswith("s3://"):
        from sdl.loader.index.remote import open_remote_shard
        from sdl.loader.storage import RemoteFiles

        remote = RemoteFiles(index.root)  # shards through the default node cache
    for source_id, where in group_by_source(source_ids):
        shard = open_remote_shard(index, remote, source_id) if remote else open_shard(index.path_of(source_id))
        out[where] = shard[offsets[where]]
    return out


def load_decoder(tokenizer: dict[str, Any], root: Path) -> tuple[Any, str | None]:
    """(decode function, None) for the manifest's tokenizer, offline; (None, why) when it cannot be loaded.

    The name is looked up as sdl prepare looks it up (the bundled tokenizer, a path — also relative to
    the dataset — or a name in the local HF cache); a tokenizer whose hash differs from the manifest's
    is not the one that wrote the ids, so its text would be wrong: ids are shown instead.
    """
    from sdl.loader.errors import SdlError
    from sdl.prepare.tokenizer import BUNDLED_NAME, load_tokenizer

    name = tokenizer.get("path") or tokenizer.get("name") or ""
    candidates = [None] if name == BUNDLED_NAME else [name, str(root / name)] if not Path(name).is_absolute() else [name]
    spec, why = None, f"tokenizer {name!r} could not be loaded offline"
    for candidate in candidates:
        try:
            spec = load_tokenizer(candidate, local_only=True)
            break
        except (SdlError, OSError, ValueError):
            continue
    if spec is not None and tokenizer.get("hash") and spec.hash != tokenizer["hash"]:
        spec, why = None, f"tokenizer {name!r} found offline differs from the one that prepared the data (hash)"
    if spec is None:
        return None, f"{why}; showing token ids"
    return spec.build().decode, None


def token_samples(index: Any, seq_len: int, stride: int, show: int, windows: range) -> list[dict[str, Any]]:
    decode, why = load_decoder(index.meta["tokenizer"], Path(index.root))
    shown = []
    for window in list(windows)[:show]:
        ids = read_tokens(index, window * stride, seq_len).tolist()
        shown.append({"window": window, "ids": ids} | ({"text": decode(ids)} if decode else {"note": why}))
    return shown


def dataset_samples(index: Any, show: int, split: Optional[str]) -> list[dict[str, Any]]:
    """The first `show` samples of a zarr/Arrow dataset: shape/dtype of arrays, values (shortened) of columns."""
    if index.kind == "zarr":
        from sdl.loader.data.zarr_samples import ZarrSamples

        dataset = ZarrSamples(index.root)
    else:
        from sdl.loader.data.arrow_rows import ArrowRows

        dataset = ArrowRows(index.root, split=split)
    count = min(show, len(dataset))
    batch = dataset.__getitems__(list(range(count))) if count else {}
    shown = []
    for row in range(count):
        sample = {}
        for name, value in batch.items():
            item = value[row]
            if hasattr(item, "shape") and getattr(item, "ndim", 0) > 0:
                sample[name] = f"shape {list(item.shape)} {str(item.dtype).replace('torch.', '')}"
            else:
                item = item.item() if hasattr(item, "item") else item
                shown_item = item if isinstance(item, str) else repr(item)
                sample[name] = item if len(shown_item) <= 80 else shown_item[:77] + "..."
        shown.append(sample)
    return shown


def token_info(index: Any, seq_len: Optional[int], stride: Optional[int], split_rate: float, show: int) -> tuple[dict, list]:
    """Counts of a token dataset; with a window length (or --show) the windows, the split and `show` decoded windows."""
    from sdl.loader.data.split import count_windows, split_range

    info = {"tokens": index.total, **document_stats(index), "dtype": index.meta["dtype"],
            "tokenizer": index.meta["tokenizer"].get("name"), "vocab_size": index.meta.get("vocab_size")}
    if not (seq_len or show):
        return info, []
    seq_len, stride = seq_len or 128, stride or seq_len or 128
    num_windows = count_windows(index.total, seq_len, stride)
    train, val = (split_range(num_windows, s, split_rate, seq_len, stride) for s in ("train", "val"))
    info |= {"seq_len": seq_len, "stride": stride, "windows": num_windows, "train_windows": len(train), "val_windows": len(val)}
    return info, token_samples(index, seq_len, stride, show, train) if show else []


def command(
    path: Optional[str] = typer.Argument(None, help="A dataset folder (token dataset, zarr stores, Arrow files) or s3://bucket/prefix."),
    kind: Optional[str] = typer.Option(None, "--kind", help="tokens | zarr | arrow (default: detected)."),
    hf: Optional[str] = typer.Option(None, "--hf", help="A dataset in the local HF datasets cache."),
    hf_cache: Optional[Path] = typer.Option(None, "--hf-cache", help="HF datasets cache folder (default: $HF_DATASETS_CACHE)."),
    hf_config: Optional[str] = typer.Option(None, "--hf-config", help="Config of the --hf dataset, when it has several."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of an Arrow dataset holding several."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1, help="Window length in tokens."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Tokens between window starts (default: seq_len)."),
    split_rate: float = typer.Option(1.0, "--split-rate", min=0.0, max=1.0, help="Fraction of windows for training."),
    show: int = typer.Option(0, "--show", min=0, help="Print this many decoded windows or samples."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show what a dataset holds; with --seq-len the windows and the train/val split; --show K samples.
    A mixture config (configs/mix-*.toml): its sources, weights, and passes per source per epoch."""
    if path is not None and path.endswith(".toml"):
        from sdl.cli.bench_mixture import check_config_windows

        dataset_options = {"--kind": kind, "--hf": hf, "--hf-cache": hf_cache, "--hf-config": hf_config, "--split": split,
                           "--split-rate": split_rate if split_rate != 1.0 else None, "--show": show or None}
        refuse_ignored(given(dataset_options), ("does not apply", "do not apply"),
                       f"to a mixture config ({path}: its file sets seq_len and the sources)",
                       "drop {them}, or inspect one source's folder instead")
        check_config_windows(Path(path), {flag: value for flag, value in (("--seq-len", seq_len), ("--stride", stride))
                                          if value is not None})  # the config's own values are accepted
        return inspect_mixture(Path(path), json_out)
    from sdl.loader.index import open_index

    index = open_index(resolve_root(path, hf, hf_cache, hf_config), kind=kind, split=split)
    info: dict[str, Any] = {"path": index.root, "kind": index.kind, "sources": len(index.sources), "items": index.total}
    if index.kind != "tokens":
        refuse_ignored(given({"--seq-len": seq_len, "--stride": stride, "--split-rate": split_rate if split_rate != 1.0 else None}),
                       ("does not apply", "do not apply"), f"to {'an' if index.kind == 'arrow' else 'a'} {index.kind} dataset (its "
                       "samples are its items, not token windows)", "drop {them}")
    elif stride is not None and seq_len is None:
        raise ConfigError(f"--stride {stride} needs --seq-len (the window length it steps between); add --seq-len")
    elif split_rate != 1.0 and seq_len is None and not show:
        raise ConfigError(f"--split-rate {split_rate} splits token windows, which only --seq-len (or --show) makes; add --seq-len")
    if index.kind == "tokens":
        more, samples = token_info(index, seq_len, stride, split_rate, show)
    else:
        more = {"fields": index.meta["fields"]} if index.kind == "zarr" else {
            "columns": index.meta["schema"], "split": index.meta.get("split"),
            "null_columns": index.meta.get("null_columns", [])}  # ArrowRows gives these as lists in every batch
        samples = dataset_samples(index, show, split) if show else []
    info |= more
    if json_out:
        typer.echo(json.dumps(info | {"samples": samples}, indent=2, default=str))
        return
    render(info, f"sdl inspect {index.root}")
    for sample in samples:
        typer.echo(json.dumps(sample, default=str, ensure_ascii=False) if "window" not in sample or "text" not in sample
                   else f"[window {sample['window']}] {sample['text']!r}")


def inspect_mixture(path: Path, json_out: bool) -> None:
    """A mixture config: one row per source (kind, samples, weight, draws and passes in epoch 0), and with a weight
    schedule one row per piece (its stream positions, and per source its weight, draws, passes, pass at its end)."""
    from sdl.loader.data.mixture_config import read_mixture_config
    from sdl.loader.data.mixture_schedule import schedule_plan
    from sdl.loader.sampling.sampler import ElasticSampler

    config = read_mixture_config(path)
    mixture = config.build()
    plan = mixture.source_plan(ElasticSampler.for_dataset(mixture, 1, shuffle=False).state(0))
    described = mixture.describe()["sources"]
    sources = {source.name: {"kind": source.kind, "path": source.path, "samples": plan[source.name]["num_samples"],
                             "weight": round(plan[source.name]["weight"], 6),
                             "draws_per_epoch": plan[source.name]["draws_to_epoch_end"],
                             "passes_per_epoch": plan[source.name]["passes_to_epoch_end"],
                             "identity": described[source.name]["identity"]} for source in config.sources}
    info = {"path": str(path), "kind": "mixture", "num_samples": len(mixture), "seq_len": config.seq_len,
            "window_bound": round(mixture.stream.bound, 4), "sources": sources}
    if mixture.schedule:
        weights = [mixture.weights, *(w for _, w in mixture.schedule)]
        info["schedule"] = schedule_plan(mixture.stream, weights, {n: len(s) for n, s in zip(mixture.names, mixture.sources)},
                                         len(mixture))
    if json_out:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sdl inspect {path}: {len(mixture):,} positions per epoch (draws, passes: per epoch), seq_len "
                        f"{config.seq_len}, every window within ±{mixture.stream.bound:.2f} of weight × length")
    for column in ("source", "kind", "samples", "weight", "draws", "passes", "path"):
        table.add_column(column, justify="left" if column in ("source", "kind", "path") else "right")
    for name, row in sources.items():
        table.add_row(name, row["kind"], f"{row['samples']:,}", f"{row['weight']:.4g}", f"{row['draws_per_epoch']:,}",
                      f"{row['passes_per_epoch']:.3f}", row["path"])
    Console().print(table)
    if "schedule" in info:
        _print_schedule(info["schedule"])


def _print_schedule(pieces: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="weight schedule: per piece of the stream (positions; the last to the end of its epoch), per source "
                        "weight, draws, passes, and the pass it is in at the piece's end")
    for column in ("from", "to", *pieces[0]["sources"]):
        table.add_column(column, justify="right")
    for piece in pieces:
        cells = [f"{piece['weights'][n]:.3g} · {row['draws']:,} · {row['passes']:.3f} · pass {row['pass_at_end']}"
                 for n, row in piece["sources"].items()]
        table.add_row(f"{piece['from']:,}", f"{piece['to']:,}", *cells)
    Console().print(table)
