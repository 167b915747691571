"""`sdl bench --peer NAME`: other loaders over the same tokens, the same windows, batch size and workers, in the same run.

- **torchdata**: `StatefulDataLoader` over the plain memmap window Dataset (what torchdata users pair it
  with), shuffled, default collate.
- **hf**: the same windows (seq_len + 1 tokens each) saved as a HuggingFace `datasets` Arrow dataset
  (written before timing, memory-mapped back with `load_from_disk`), `with_format("torch")`, in a
  shuffled `DataLoader`: a pretokenised HF dataset as users feed it.
- **litdata**: the dataset's shards written once (before timing) by LitData's own `optimize()` with its
  `TokensLoader`, read back by `StreamingDataset(item_loader=TokensLoader(block_size=seq_len + 1),
  shuffle=True)` in a `StreamingDataLoader`: LitData's pretraining recipe. Its windows are `seq_len + 1`
  tokens at a stride of `seq_len + 1` (sdl's default: `seq_len` + the shifted label, stride `seq_len`), and
  it returns the shard dtype (int32 here) where sdl returns int64: the same tokens per sample, less output work.
- **mosaic**: the same windows (seq_len + 1 tokens, stride seq_len + 1, as LitData's) written once (before
  timing) by MosaicML Streaming's `MDSWriter` as a fixed-shape `ndarray:int32` column, read back by its
  `StreamingDataset(local=..., shuffle=True)` in its `StreamingDataLoader`: an MDS token dataset as LLM Foundry
  users feed it (theirs stores bytes and decodes with `np.frombuffer`, one more step). It returns int32 rows.

Peers are optional: never dependencies. A peer that is not installed is reported as skipped, with the
command that installs it.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from sdl.loader.bench.baseline import naive_windows
from sdl.loader.data.windows import TokenWindows
from sdl.loader.errors import ConfigError

INSTALL = {"torchdata": "pip install torchdata", "hf": "pip install datasets", "litdata": "pip install litdata",
           "mosaic": "pip install mosaicml-streaming"}
MODULES = {"torchdata": "torchdata", "hf": "datasets", "litdata": "litdata", "mosaic": "streaming"}


def check_peers(names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in INSTALL]
    if unknown:
        raise ConfigError(f"--peer {unknown[0]!r} is not a known peer; expected one of {', '.join(INSTALL)}")


def peer_version(name: str) -> str | None:
    import importlib
    import importlib.metadata

    try:
        importlib.import_module(MODULES[name])
    except ImportError:
        return None
    try:
        return importlib.metadata.version({"hf": "datasets", "mosaic": "mosaicml-streaming"}.get(name, name))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def torchdata_loader(dataset: TokenWindows, batch_size: int, seed: int, num_workers: int, _folder: str) -> Any:
    from torchdata.stateful_dataloader import StatefulDataLoader

    generator = torch.Generator().manual_seed(seed)
    return StatefulDataLoader(naive_windows(dataset), batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              drop_last=True, generator=generator, persistent_workers=num_workers > 0)


def hf_loader(dataset: TokenWindows, batch_size: int, seed: int, num_workers: int, folder: str) -> Any:
    import datasets

    saved = f"{folder}/hf"
    try:
        windows = datasets.load_from_disk(saved)
    except FileNotFoundError:
        windows = _hf_windows(dataset, saved)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(windows.with_format("torch"), batch_size=batch_size, shuffle=True,
                                       num_workers=num_workers, drop_last=True, generator=generator,
                                       persistent_workers=num_workers > 0)


def _hf_windows(dataset: TokenWindows, saved: str) -> Any:
    """Every window of `dataset` (seq_len + 1 tokens) as a row of an Arrow dataset saved at `saved`, memory-mapped back."""
    import datasets

    def rows(chunk: int = 1024):
        for first in range(0, len(dataset), chunk):
            ids = list(range(first, min(first + chunk, len(dataset))))
            batch = dataset.__getitems__(ids)
            tokens = torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1).numpy()
            yield from ({"input_ids": row} for row in tokens)

    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
    datasets.Dataset.from_generator(rows, features=features).save_to_disk(saved)
    return datasets.load_from_disk(saved)


def _shard_tokens(path: str) -> Any:
    """LitData's `optimize()` fn: one sdl shard's tokens as one int32 item (a TokensLoader stream)."""
    import numpy as np

    yield torch.from_numpy(np.load(path, mmap_mode="r").astype(np.int32))


def litdata_loader(dataset: TokenWindows, batch_size: int, seed: int, num_workers: int, folder: str) -> Any:
    import multiprocessing
    import os

    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader, optimize

    out = f"{folder}/litdata"
    if not os.path.exists(f"{out}/index.json"):
        # optimize() sets the process-wide multiprocessing start method (force=True): put it back afterwards, so that
        # the loaders measured after it (and the caller's) start their workers as before.
        start_method = multiprocessing.get_start_method(allow_none=True)
        saved = {k: os.environ.get(k) for k in ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER")}
        os.environ.update(DATA_OPTIMIZER_CACHE_FOLDER=f"{folder}/ld-cache", DATA_OPTIMIZER_DATA_CACHE_FOLDER=f"{folder}/ld-data")
        try:
            optimize(fn=_shard_tokens, inputs=[str(dataset.index.path_of(i)) for i in range(len(dataset.index.sources))],
                     output_dir=out, chunk_size=1 << 24, item_loader=TokensLoader(), num_workers=1, verbose=False)
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
            multiprocessing.set_start_method(start_method, force=True)
    windows = StreamingDataset(out, item_loader=TokensLoader(block_size=dataset.seq_len + 1), shuffle=True, seed=seed,
                               drop_last=True)
    return StreamingDataLoader(windows, batch_size=batch_size, num_workers=num_workers, drop_last=True)


def mosaic_loader(dataset: TokenWindows, batch_size: int, seed: int, num_workers: int, folder: str) -> Any:
    import os

    from streaming import MDSWriter, StreamingDataLoader, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    out, width = f"{folder}/mosaic", dataset.seq_len + 1
    if not os.path.exists(f"{out}/index.json"):
        with MDSWriter(out=out, columns={"tokens": f"ndarray:int32:{width}"}, size_limit=1 << 26) as writer:
            for tokens in _stream_blocks(dataset, width):
                for row in tokens:
                    writer.write({"tokens": row})
    clean_stale_shared_memory()  # the in-process reader measured before this one is gone: free its shared state
    windows = StreamingDataset(local=out, shuffle=True, shuffle_seed=seed, batch_size=batch_size)
    return StreamingDataLoader(windows, batch_size=batch_size, num_workers=num_workers, drop_last=True,
                               persistent_workers=num_workers > 0)


def _stream_blocks(dataset: TokenWindows, width: int, chunk: int = 1 << 20) -> Any:
    """The dataset's token stream cut into rows of `width` int32 tokens, a chunk at a time (the tail dropped)."""
    import numpy as np

    rest = np.zeros(0, dtype=np.int32)
    for i in range(len(dataset.index.sources)):
        shard = np.load(dataset.index.path_of(i), mmap_mode="r")
        for first in range(0, len(shard), chunk):
            tokens = np.concatenate([rest, shard[first:first + chunk].astype(np.int32)])
            rows = len(tokens) // width
            yield tokens[:rows * width].reshape(rows, width)
            rest = tokens[rows * width:]


def close_mosaic(loader: Any) -> None:
    """Stop the shard-preparing threads Mosaic's in-process iteration leaves running (they would read the removed folder)."""
    dataset = loader.dataset
    if getattr(dataset, "_iterator", None) is not None:
        dataset._iterator.exit()
    if getattr(dataset, "_executor", None) is not None:
        dataset._executor.shutdown(wait=True)


BUILDERS: dict[str, Callable[..., Any]] = {"torchdata": torchdata_loader, "hf": hf_loader, "litdata": litdata_loader,
                                           "mosaic": mosaic_loader}
CLOSERS: dict[str, Callable[[Any], None]] = {"mosaic": close_mosaic}


def run_peer(name: str, dataset: TokenWindows, config: Any, time_reader: Callable[[Any], Any]) -> dict[str, Any]:
    """{"version", "in_process", "workers"} for peer `name` (Throughputs, via `time_reader(batches)`), or {"skipped": why}."""
    version = peer_version(name)
    if version is None:
        return {"skipped": f"not installed ({INSTALL[name]})"}
    if name not in BUILDERS:
        return {"version": version, "skipped": "installed, but this version of sdl bench does not drive it yet"}
    result: dict[str, Any] = {"version": version}
    with tempfile.TemporaryDirectory(prefix=f"sdl-bench-{name}-") as folder:
        for label, num_workers in (("in_process", 0), ("workers", config.num_workers)):
            if label == "workers" and num_workers == 0:
                result[label] = None
                continue
            loader = BUILDERS[name](dataset, config.batch_size, config.seed, num_workers, folder)
            result[label] = time_reader(loader)
            CLOSERS.get(name, lambda _: None)(loader)
            del loader  # its persistent workers exit now, before the folder they read is removed
            gc.collect()
    return result
