"""Discovery of the non-token sources: zarr arrays and Arrow files, their listers, and the local HF cache.

Zarr (read from the metadata files alone, zarr v2 `.zarray`/`.zgroup` or v3 `zarr.json`; zarr itself
is not imported to build an index). A *store* is one source:
  - a zarr array: its samples have one field, `"data"`;
  - a zarr group: its samples have one field per array directly inside it (`"images"`, `"labels"`),
    all of the same first-axis length.
The root is a store, or a folder searched recursively for stores (hidden folders skipped). Every
store must have the same fields with the same trailing shape and dtype. A store's size and mtime are
those of its metadata files: resizing or recreating an array rewrites them (a chunk rewritten in
place changes no length, so no offset; `sdl index --validate` decodes every chunk).

Arrow: a `save_to_disk` folder (`state.json` lists its files; a DatasetDict folder holds one such
folder per split), a folder of `.arrow` files, or a HF datasets cache folder
(`<cache>/<name>/<config>/<version>/<hash>/<builder>-<split>[-00000-of-00003].arrow`, found by
`find_hf_dataset` without calling `datasets.load_dataset`). Files in IPC stream format (what
`datasets` writes) and IPC file format are both read, memory-mapped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from sdl.loader.errors import FormatError, InputError
from sdl.loader.format import CACHE_DIR, MANIFEST_NAME
from sdl.loader.index import LISTERS, SOURCE_STATS, GlobalIndex, SourceInfo, descriptor_of

ZARR_META = ("zarr.json", ".zarray", ".zgroup")
HF_SHARD = re.compile(r"-\d{5}-of-\d{5}$")


# ---------------------------------------------------------------- zarr


def _zarr_node(directory: Path) -> tuple[str, dict[str, Any]] | None:
    """("array" | "group", metadata) when `directory` is a zarr node, else None."""
    if (directory / "zarr.json").is_file():
        meta = _read_json(directory / "zarr.json")
        return meta.get("node_type", "array"), meta
    if (directory / ".zarray").is_file():
        return "array", _read_json(directory / ".zarray")
    if (directory / ".zgroup").is_file():
        return "group", _read_json(directory / ".zgroup")
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable zarr metadata ({exc}); rewrite the array with zarr") from None


def find_zarr_stores(root: Path) -> list[str]:
    """Relative paths ("." for the root itself) of the zarr stores at or under `root`, sorted."""
    if _zarr_node(root) is not None:
        return ["."]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in list(dirnames):
            if _zarr_node(Path(dirpath) / name) is not None:
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
                dirnames.remove(name)
    return sorted(found)


def _array_fields(directory: Path, meta: dict[str, Any]) -> tuple[tuple[int, ...], str]:
    shape = tuple(meta.get("shape", ()))
    raw = meta.get("data_type", meta.get("dtype"))
    try:
        dtype = np.dtype(raw).name
    except TypeError:
        dtype = str(raw)
    if not shape:
        raise FormatError(f"{directory}: a 0-d zarr array; expected at least one axis (one sample per first-axis item)")
    return shape, dtype


def describe_zarr_store(root: Path, rel: str) -> tuple[int, dict[str, dict[str, Any]], list[Path]]:
    """(first-axis length, {field: {"shape": trailing, "dtype": ...}}, metadata files) of one store."""
    directory = root / rel
    node_type, meta = _zarr_node(directory)
    meta_files = _meta_files(directory)
    if node_type == "array":
        members = {"data": (directory, meta)}
    else:
        members = {child.name: (child, child_meta) for child, child_meta in _group_arrays(directory)}
        meta_files += [f for child, _ in members.values() for f in _meta_files(child)]
        if not members:
            raise FormatError(f"{directory}: a zarr group with no arrays directly inside it; expected arrays of samples")
    lengths, fields = {}, {}
    for name, (path, array_meta) in members.items():
        shape, dtype = _array_fields(path, array_meta)
        lengths[name] = shape[0]
        fields[name] = {"shape": list(shape[1:]), "dtype": dtype}
    if len(set(lengths.values())) > 1:
        raise FormatError(f"{directory}: arrays of different first-axis lengths {lengths}; expected one length per group")
    return next(iter(lengths.values())), fields, meta_files


def list_zarr_sources(root: Path) -> tuple[tuple[SourceInfo, ...], dict[str, Any]]:
    """One source per zarr store: length = first-axis items; all stores must agree on fields, shapes, dtypes."""
    stores = find_zarr_stores(root)
    if not stores:
        raise InputError(f"{root}: no zarr arrays found (no zarr.json or .zarray); expected a folder of zarr stores")
    sources, first_fields, first = [], None, None
    for rel in stores:
        length, fields, meta_files = describe_zarr_store(root, rel)
        if first_fields is None:
            first_fields, first = fields, rel
        elif fields != first_fields:
            raise FormatError(
                f"zarr stores disagree: {first} has {_fields_text(first_fields)}, {rel} has {_fields_text(fields)}; "
                "every store must have the same arrays with the same trailing shape and dtype"
            )
        size, mtime_ns = _stat_files(meta_files)
        sources.append(SourceInfo(path=rel, length=length, size=size, mtime_ns=mtime_ns))
    return tuple(sources), {"fields": first_fields}


def _stat_files(paths: list[Path]) -> tuple[int, int]:
    stats = [p.stat() for p in paths]
    return sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)


def _meta_files(directory: Path) -> list[Path]:
    return [directory / name for name in ZARR_META if (directory / name).is_file()]


def zarr_store_stat(root: str, rel: str) -> tuple[int, int]:
    """(size, mtime_ns) of a store's metadata files (the store's own and its member arrays'), as listed."""
    directory = Path(root) / rel
    node = _zarr_node(directory) if directory.is_dir() else None
    if node is None:
        raise FileNotFoundError(directory)
    files = _meta_files(directory)
    if node[0] == "group":
        files += [f for child, _ in _group_arrays(directory) for f in _meta_files(child)]
    return _stat_files(files)


def _group_arrays(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    members = []
    for child in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        node = _zarr_node(child)
        if node is not None and node[0] == "array":
            members.append((child, node[1]))
    return members


def _fields_text(fields: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{name} [*, {', '.join(map(str, f['shape']))}] {f['dtype']}".replace("[*, ]", "[*]") for name, f in fields.items())


# ---------------------------------------------------------------- arrow


def _split_of(file_name: str) -> str | None:
    """The split of a HF cache file `<builder>-<split>[-00000-of-00003].arrow`."""
    stem = HF_SHARD.sub("", file_name[: -len(".arrow")])
    return stem.rsplit("-", 1)[1] if "-" in stem else None


def find_arrow_files(root: Path, split: str | None = None) -> tuple[list[str], str | None, str | None]:
    """(relative file paths in order, descriptor file or None, split) of an Arrow dataset folder."""
    if (root / "dataset_dict.json").is_file():
        splits = _read_json(root / "dataset_dict.json").get("splits", [])
        split = _pick_split(root, split, splits)
        files, descriptor, _ = find_arrow_files(root / split)
        return [f"{split}/{f}" for f in files], f"{split}/{descriptor}" if descriptor else None, split
    if (root / "state.json").is_file():
        state = _read_json(root / "state.json")
        return [entry["filename"] for entry in state.get("_data_files", [])], "state.json", split
    files = sorted(p.name for p in root.glob("*.arrow") if p.is_file())
    if (root / "dataset_info.json").is_file():  # a HF cache folder: files carry their split in the name
        splits = sorted({s for s in map(_split_of, files) if s})
        if splits:
            split = _pick_split(root, split, splits)
            files = [f for f in files if _split_of(f) == split]
        return files, "dataset_info.json", split
    return files, None, split


def _pick_split(root: Path, split: str | None, splits: list[str]) -> str:
    if split is None and len(splits) == 1:
        return splits[0]
    if split is None:
        raise InputError(f"{root} holds the splits {', '.join(splits)}; choose one with --split (split= in Python)")
    if split not in splits:
        raise InputError(f"{root} has no split {split!r}; it holds {', '.join(splits)}")
    return split


def open_arrow_table(path: Path) -> Any:
    """The whole Arrow file as a pyarrow Table, memory-mapped (zero-copy): IPC file or stream format."""
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path), "r")
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_stream(source).read_all()
    except FileNotFoundError:
        raise FormatError(f"{path}: listed by the dataset but missing; re-save the dataset (save_to_disk) or re-run load_dataset") from None
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{path}: not a readable Arrow file ({exc}); re-save the dataset (save_to_disk) or re-run load_dataset") from None


def list_arrow_sources(root: Path, split: str | None = None) -> tuple[tuple[SourceInfo, ...], dict[str, Any]]:
    """One source per Arrow file: length = rows (record batch headers only; the data stays memory-mapped)."""
    files, descriptor, split = find_arrow_files(root, split)
    if not files:
        raise InputError(f"{root}: no .arrow files found; expected a save_to_disk folder, Arrow files, or --hf NAME")
    sources, schema, first = [], None, None
    for rel in files:
        table = open_arrow_table(root / rel)
        fields = {f.name: str(f.type) for f in table.schema}
        if schema is None:
            schema, first = fields, rel
        elif fields != schema:
            raise FormatError(f"Arrow files disagree: {first} has columns {schema}, {rel} has {fields}; expected one schema")
        stat = (root / rel).stat()
        sources.append(SourceInfo(path=rel, length=table.num_rows, size=stat.st_size, mtime_ns=stat.st_mtime_ns))
    meta: dict[str, Any] = {"schema": schema, "split": split}
    if descriptor:
        meta["descriptor"] = {**descriptor_of(root / descriptor), "file": descriptor}
    return tuple(sources), meta


# ---------------------------------------------------------------- kinds


def detect_other_kind(root: Path) -> str:
    """"zarr" or "arrow" for a folder without a manifest; a one-line InputError for anything else."""
    if root.is_file():
        hint = f"; pass its folder {root.parent}" if root.suffix == ".arrow" else ""
        raise InputError(f"{root}: a file; expected a folder holding a token dataset, zarr arrays or Arrow files{hint}")
    if _zarr_node(root) is not None:
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
    if find_zarr_stores(root):
        kinds.add("zarr")
    if any(p.suffix == ".npy" for p in entries):
        kinds.add("token shards without a manifest")
    if len(kinds) > 1:
        raise InputError(f"{root}: a folder mixing kinds ({', '.join(sorted(kinds))}); expected one kind per dataset, split them into folders")
    if kinds == {"arrow"} or kinds == {"zarr"}:
        return kinds.pop()
    if kinds:
        raise InputError(f"{root}: .npy files but no {MANIFEST_NAME}; expected a token dataset written by sdl prepare")
    raise InputError(f"{root}: no token dataset, zarr arrays or Arrow files found; expected one of those (or --hf NAME)")


def source_set_changed(index: GlobalIndex) -> bool:
    """Whether the files a zarr/Arrow folder would list now differ from the indexed ones (listing only)."""
    root = Path(index.root)
    if index.kind == "zarr":
        return tuple(find_zarr_stores(root)) != index.sources.paths
    try:
        files, _, _ = find_arrow_files(root, index.meta.get("split"))
    except InputError:
        return True
    return tuple(files) != index.sources.paths


LISTERS["zarr"] = list_zarr_sources
LISTERS["arrow"] = list_arrow_sources
SOURCE_STATS["zarr"] = zarr_store_stat


# ---------------------------------------------------------------- HF cache


def hf_cache_dirs(cache_dir: str | Path | None = None) -> list[Path]:
    """Where `datasets` keeps its cache: cache_dir, else $HF_DATASETS_CACHE, else $HF_HOME/datasets, else ~/.cache."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    if os.environ.get("HF_DATASETS_CACHE"):
        return [Path(os.environ["HF_DATASETS_CACHE"])]
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return [hf_home / "datasets"]


def find_hf_dataset(name: str, *, cache_dir: str | Path | None = None, config: str | None = None) -> Path:
    """The folder of Arrow files of dataset `name` in the local HF cache, without calling load_dataset.

    Layout: <cache>/<name with / as ___>/<config>/<version>/<hash>/; the newest complete hash folder wins.
    """
    looked = []
    for cache in hf_cache_dirs(cache_dir):
        base = cache / name.replace("/", "___")
        looked.append(str(base))
        configs = sorted(p for p in base.glob("*") if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []
        if config is not None:
            configs = [p for p in configs if p.name == config or p.name.startswith(f"{config}-")]
        if len(configs) > 1:
            names = ", ".join(p.name for p in configs)
            raise InputError(f"dataset {name!r} has several configs in {base} ({names}); choose one with --hf-config")
        candidates = [h for c in configs for v in sorted(c.iterdir()) if v.is_dir() for h in v.iterdir()
                      if h.is_dir() and not h.name.endswith(".incomplete") and (h / "dataset_info.json").is_file()
                      and any(h.glob("*.arrow"))]
        if candidates:
            return max(candidates, key=lambda h: (h / "dataset_info.json").stat().st_mtime_ns)
    what = f"dataset {name!r}" + (f" config {config!r}" if config else "")
    raise InputError(
        f"{what} is not in the local HF datasets cache (looked in {', '.join(looked)}); load it once with "
        "datasets.load_dataset, or point --hf-cache (or HF_DATASETS_CACHE) at the cache it was loaded into"
    )


__all__ = ["find_zarr_stores", "list_zarr_sources", "find_arrow_files", "list_arrow_sources", "open_arrow_table",
           "detect_other_kind", "find_hf_dataset", "hf_cache_dirs", "CACHE_DIR"]
