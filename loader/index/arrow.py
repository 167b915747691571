"""Arrow sources: one source per Arrow file, length = rows, read from record batch headers (memory-mapped).

A `save_to_disk` folder (`state.json` lists its files; a DatasetDict folder holds one such folder per
split), a folder of `.arrow` files, or a HF datasets cache folder
(`<cache>/<name>/<config>/<version>/<hash>/<builder>-<split>[-00000-of-00003].arrow`, found by
`sdl.loader.index.hf_cache`). Files in IPC stream format (what `datasets` writes) and IPC file format
are both read, memory-mapped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sdl.loader.errors import FormatError, InputError
from sdl.loader.index.table import SourceInfo
from sdl.loader.index.tokens import descriptor_of

HF_SHARD = re.compile(r"-\d{5}-of-\d{5}$")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable dataset metadata ({exc}); re-save the dataset (save_to_disk)") from None


def split_of(file_name: str) -> str | None:
    """The split of a HF cache file `<builder>-<split>[-00000-of-00003].arrow`."""
    stem = HF_SHARD.sub("", file_name[: -len(".arrow")])
    return stem.rsplit("-", 1)[1] if "-" in stem else None


def find_arrow_files(root: Path, split: str | None = None) -> tuple[list[str], str | None, str | None]:
    """(relative file paths in order, descriptor file or None, split) of an Arrow dataset folder."""
    if (root / "dataset_dict.json").is_file():
        splits = _read_json(root / "dataset_dict.json").get("splits", [])
        split = pick_split(root, split, splits)
        files, descriptor, _ = find_arrow_files(root / split)
        return [f"{split}/{f}" for f in files], f"{split}/{descriptor}" if descriptor else None, split
    if (root / "state.json").is_file():
        state = _read_json(root / "state.json")
        return [entry["filename"] for entry in state.get("_data_files", [])], "state.json", split
    files = sorted(p.name for p in root.glob("*.arrow") if p.is_file())
    if (root / "dataset_info.json").is_file():  # a HF cache folder: files carry their split in the name
        splits = sorted({s for s in map(split_of, files) if s})
        if splits:
            split = pick_split(root, split, splits)
            files = [f for f in files if split_of(f) == split]
        return files, "dataset_info.json", split
    return files, None, split


def pick_split(root: Any, split: str | None, splits: list[str]) -> str:
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
