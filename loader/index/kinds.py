"""The kinds of source an index can hold, and the one registry of their listers: which kind a folder is.

`LISTERS[kind](root, **options) -> (sources, meta)` lists a dataset's sources from headers only;
`SOURCE_STATS[kind](root, rel) -> (size, mtime_ns)` measures one source as its lister did (os.stat
when absent). Written here, where they are read; never filled by import side effects.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdl.loader.errors import InputError
from sdl.loader.format.tokens import CACHE_DIR, MANIFEST_NAME
from sdl.loader.index import arrow, tokens, zarr
from sdl.loader.index.table import GlobalIndex, SourceInfo

LISTERS: dict[str, Callable[..., tuple[tuple[SourceInfo, ...], dict[str, Any]]]] = {
    "tokens": tokens.list_token_sources,
    "zarr": zarr.list_zarr_sources,
    "arrow": arrow.list_arrow_sources,
}
SOURCE_STATS: dict[str, Callable[[str, str], tuple[int, int]]] = {"zarr": zarr.zarr_store_stat}


def detect_kind(root: Path) -> str:
    """Which kind of dataset `root` holds: a token dataset, zarr arrays, or Arrow files."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory; expected a token dataset, zarr arrays or Arrow files")
    if os.path.lexists(root / MANIFEST_NAME):  # a folder or a broken link there too: reading it says what it is
        return "tokens"
    return detect_other_kind(root)


def detect_other_kind(root: Path) -> str:
    """"zarr" or "arrow" for a folder without a manifest; a one-line InputError for anything else."""
    if root.is_file():
        hint = f"; pass its folder {root.parent}" if root.suffix == ".arrow" else ""
        raise InputError(f"{root}: a file; expected a folder holding a token dataset, zarr arrays or Arrow files{hint}")
    if zarr.zarr_node(root) is not None:
        return "zarr"
    if any((root / name).is_file() for name in ("state.json", "dataset_dict.json")):
        return "arrow"
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise InputError(f"{root}: empty folder; expected a token dataset, zarr arrays or Arrow files")
    jobs = [p.name for p in entries if (p / MANIFEST_NAME).is_file()]
    if jobs:
        raise InputError(f"{root}: job folders ({', '.join(sorted(jobs)[:3])}, …) but no {MANIFEST_NAME}; run `sdl index {root}` to join them")
    kinds = {"arrow"} if any(p.suffix == ".arrow" for p in entries) else set()
    if zarr.find_zarr_stores(root):
        kinds.add("zarr")
    if any(p.suffix == ".npy" for p in entries):
        kinds.add("token shards without a manifest")
    if len(kinds) > 1:
        raise InputError(f"{root}: a folder mixing kinds ({', '.join(sorted(kinds))}); expected one kind per dataset, split them into folders")
    if kinds == {"arrow"} or kinds == {"zarr"}:
        return kinds.pop()
    if kinds and (root / CACHE_DIR / "prepare-journal.json").is_file():  # the manifest is written last
        raise InputError(f"{root}: an unfinished sdl prepare (shards and its journal, no {MANIFEST_NAME} yet); wait for it "
                         "if it is still running, else re-run the same sdl prepare command to finish it")
    if kinds:
        raise InputError(f"{root}: .npy files but no {MANIFEST_NAME}; expected a token dataset written by sdl prepare")
    raise InputError(f"{root}: no token dataset, zarr arrays or Arrow files found; expected one of those (or --hf NAME)")


def source_set_changed(index: GlobalIndex) -> bool:
    """Whether the files a zarr/Arrow folder would list now differ from the indexed ones (listing only)."""
    root = Path(index.root)
    if index.kind == "zarr":
        return tuple(zarr.find_zarr_stores(root)) != index.sources.paths
    try:
        files, _, _ = arrow.find_arrow_files(root, index.meta.get("split"))
    except InputError:
        return True
    return tuple(files) != index.sources.paths
