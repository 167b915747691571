"""Arrow sources: one source per Arrow file, length = rows, read from record batch headers (memory-mapped).

A `save_to_disk` folder (`state.json` lists its files; a DatasetDict folder holds one such folder per
split), a folder of `.arrow` files, or a HF datasets cache folder
(`<cache>/<name>/<config>/<version>/<hash>/<builder>-<split>[-00000-of-00003].arrow`, found by
`sdl.loader.index.hf_cache`). Files in IPC stream format (what `datasets` writes) and IPC file format
are both read, memory-mapped.

A complete file ends as its format says, which a file cut off by a killed writer or copy does not
(pyarrow would read such a stream as a shorter dataset): the IPC file format starts and ends with the
magic `ARROW1`; an IPC stream ends with the end-of-stream message, `FF FF FF FF 00 00 00 00`
(continuation marker, zero metadata length). A stream in the pre-1.0 legacy format (no leading
continuation marker) ends with `00 00 00 00`, which the zero padding of a message body also is: for
it the check is best effort. `check_arrow_end` reads the first and last 8 bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sdl.loader.errors import FormatError, InputError
from sdl.loader.format.entries import refuse_broken_link, what_is
from sdl.loader.index.hf_cache import check_shards_complete, check_split_rows, split_of
from sdl.loader.index.table import SourceInfo
from sdl.loader.index.tokens import descriptor_of

FILE_MAGIC = b"ARROW1"
STREAM_END = b"\xff\xff\xff\xff\x00\x00\x00\x00"
LEGACY_STREAM_END = b"\x00\x00\x00\x00"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable dataset metadata ({exc}); re-save the dataset (save_to_disk)") from None


def data_file_names(state: Any, where: Any) -> list[str]:
    """The file names a `save_to_disk` `state.json` lists (`{"_data_files": [{"filename": …}, …]}`), in order."""
    entries = state.get("_data_files", []) if isinstance(state, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("filename"), str) for e in entries):
        raise FormatError(f"{where}: expected a save_to_disk state.json, a JSON object whose \"_data_files\" lists "
                          f"{{\"filename\": …}} entries; found {json.dumps(state)[:80]}; re-save the dataset (save_to_disk)")
    return [entry["filename"] for entry in entries]


def split_names(info: Any, where: Any) -> list[str]:
    """The splits a `save_to_disk` `dataset_dict.json` lists (`{"splits": ["train", …]}`)."""
    splits = info.get("splits", []) if isinstance(info, dict) else None
    if not isinstance(splits, list) or not all(isinstance(name, str) and name for name in splits):
        raise FormatError(f"{where}: expected a save_to_disk dataset_dict.json, a JSON object whose \"splits\" lists "
                          f"split names; found {json.dumps(info)[:80]}; re-save the DatasetDict (save_to_disk)")
    return splits


def find_arrow_files(root: Path, split: str | None = None) -> tuple[list[str], str | None, str | None]:
    """(relative file paths in order, descriptor file or None, split) of an Arrow dataset folder."""
    if (root / "dataset_dict.json").is_file():
        splits = split_names(_read_json(root / "dataset_dict.json"), root / "dataset_dict.json")
        split = pick_split(root, split, splits)
        files, descriptor, _ = find_arrow_files(root / split)
        return [f"{split}/{f}" for f in files], f"{split}/{descriptor}" if descriptor else None, split
    if (root / "state.json").is_file():
        return data_file_names(_read_json(root / "state.json"), root / "state.json"), "state.json", no_split(root, split)
    files = arrow_file_names(root)
    check_shards_complete(root, files)
    if (root / "dataset_info.json").is_file():  # a HF cache folder: files carry their split in the name
        splits = sorted({s for s in map(split_of, files) if s})
        if splits:
            split = pick_split(root, split, splits)
            files = [f for f in files if split_of(f) == split]
        return files, "dataset_info.json", split if splits else no_split(root, split)
    return files, None, no_split(root, split)


def arrow_file_names(root: Path) -> list[str]:
    """The names of the `.arrow` files of a folder, sorted. An entry named so that is no file (a dangling link, a link
    loop, a folder) is refused, as `sdl prepare` refuses one: skipped, it would leave its rows out of the dataset."""
    names = []
    for path in sorted(root.glob("*.arrow")):
        refuse_broken_link(path, root)
        if not path.is_file():
            raise InputError(f"{path}: {what_is(path)}, expected an Arrow file (each *.arrow entry of {root} is one of its "
                             "files; skipped, its rows would be left out); move it out of the folder")
        names.append(path.name)
    return names


def no_split(root: Any, split: str | None) -> None:
    """Refuse a split asked of a folder that holds one set of rows (a saved Dataset, plain Arrow files): it would be ignored."""
    if split is not None:
        raise InputError(f"{root} holds no splits (one save_to_disk Dataset or plain Arrow files), and split {split!r} was asked; "
                         "drop --split (split= in Python), or give the DatasetDict folder that holds it")


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
        check_arrow_end(path)
        source = pa.memory_map(str(path), "r")
        try:
            table = pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            table = pa.ipc.open_stream(source).read_all()
        [(field.name, str(field.type)) for field in table.schema]  # a damaged schema's names may not decode
        return table
    except FileNotFoundError:
        raise FormatError(f"{path}: listed by the dataset but missing; re-save the dataset (save_to_disk) or re-run load_dataset") from None
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: a name that is not UTF-8, extension metadata
        # (the Array2D of `datasets`, when it is imported) that does not parse
        raise FormatError(f"{path}: not a readable Arrow file ({exc}); re-save the dataset (save_to_disk) or re-run load_dataset") from None


def check_arrow_end(path: Path) -> None:
    """Refuse an Arrow file that does not end as a complete IPC file or stream (see the module docstring)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 8))
        tail = handle.read(8)
    if head.startswith(FILE_MAGIC):
        complete, expected = tail.endswith(FILE_MAGIC) and size > 2 * len(FILE_MAGIC), f"the closing {FILE_MAGIC.decode()} magic"
    elif head.startswith(STREAM_END[:4]):
        complete, expected = tail == STREAM_END and size > 8, f"the end-of-stream marker {STREAM_END.hex(' ')}"
    elif 0 < int.from_bytes(head[:4], "little", signed=True) < size:  # a legacy stream starts with its schema's length
        complete, expected = tail.endswith(LEGACY_STREAM_END), f"the legacy end-of-stream marker {LEGACY_STREAM_END.hex(' ')}"
    else:
        return  # not Arrow at all: the reader says so
    if not complete:
        raise FormatError(f"{path}: truncated Arrow file: {size:,} bytes ending in {tail.hex(' ')}, expected {expected} "
                          "(its writer was killed or the copy was cut short); re-save the dataset (save_to_disk) or "
                          "re-run load_dataset to re-create it")


def list_arrow_sources(root: Path, split: str | None = None) -> tuple[tuple[SourceInfo, ...], dict[str, Any]]:
    """One source per Arrow file: length = rows (record batch headers only; the data stays memory-mapped)."""
    files, descriptor, split = find_arrow_files(root, split)
    if not files:
        raise InputError(f"{root}: no .arrow files found; expected a save_to_disk folder, Arrow files, or --hf NAME")
    sources, schema, first, null_columns = [], None, None, set()
    for rel in files:
        table = open_arrow_table(root / rel)
        fields = {f.name: str(f.type) for f in table.schema}
        null_columns |= columns_with_nulls(table)
        if schema is None:
            schema, first = fields, rel
        elif fields != schema:
            raise FormatError(f"Arrow files disagree: {first} has columns {schema}, {rel} has {fields}; expected one schema")
        stat = (root / rel).stat()
        sources.append(SourceInfo(path=rel, length=table.num_rows, size=stat.st_size, mtime_ns=stat.st_mtime_ns, inode=stat.st_ino))
    if descriptor == "dataset_info.json":  # a HF cache folder: its builder recorded the rows of each split
        check_split_rows(root, split, sum(source.length for source in sources))
    meta: dict[str, Any] = {"schema": schema, "split": split, "null_columns": sorted(null_columns)}
    if descriptor:
        meta["descriptor"] = {**descriptor_of(root / descriptor), "file": descriptor}
    return tuple(sources), meta


def columns_with_nulls(table: Any) -> set[str]:
    """The columns of a memory-mapped Table that hold a null: from the record batches' headers, no data read."""
    return {name for name in table.column_names if table.column(name).null_count}
