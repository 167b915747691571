"""Arrow datasets in an object store: the files that `state.json` names (per split of a `dataset_dict.json`, as
`save_to_disk` writes them) or that the listing finds, each fetched whole into the node cache and memory-mapped
from there like a local file.

A `save_to_disk` folder records no rows per file, so the index counts them from the files: the first open of a
remote Arrow dataset on a node fetches every file through the cache, and records each file's rows and columns
under `$XDG_CACHE_HOME/sdl/arrow-shapes/` keyed by its ETag; later opens (other ranks, restarts) read those
records and fetch nothing, however small the cache. The sources, schema and split equal a local copy's, so
the identity does too and a loader state moves between the two.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sdl.loader.errors import FormatError, InputError
from sdl.loader.format.atomic import atomic_write_json
from sdl.loader.index.arrow import columns_with_nulls, data_file_names, no_split, open_arrow_table, pick_split, split_names, split_of
from sdl.loader.index.hf_cache import check_shards_complete
from sdl.loader.index.table import SourceInfo
from sdl.loader.storage.remote import RemoteFiles, StoredObject, default_cache_dir


def _read_json(files: RemoteFiles, relative: str) -> Any:
    try:
        return json.loads(files.read(relative))
    except ValueError as exc:
        raise FormatError(f"{files.location.url(relative)}: unreadable dataset metadata ({exc}); re-save the dataset "
                          "(save_to_disk) and upload it again") from None


def _state_files(files: RemoteFiles, folder: str) -> list[str]:
    state = _read_json(files, f"{folder}state.json")
    return [f"{folder}{name}" for name in data_file_names(state, files.location.url(f"{folder}state.json"))]


def find_remote_arrow_files(files: RemoteFiles, listing: dict[str, StoredObject],
                            split: str | None = None) -> tuple[list[str], str | None, str | None]:
    """(file paths inside the dataset, in order; descriptor file or None; split), as `find_arrow_files` locally."""
    if "dataset_dict.json" in listing:
        splits = split_names(_read_json(files, "dataset_dict.json"), files.location.url("dataset_dict.json"))
        split = pick_split(files.url, split, splits)
        return _state_files(files, f"{split}/"), f"{split}/state.json", split
    if "state.json" in listing:
        return _state_files(files, ""), "state.json", no_split(files.url, split)
    names = sorted(key for key in listing if "/" not in key and key.endswith(".arrow"))
    check_shards_complete(files.url, names)
    if "dataset_info.json" in listing:  # a HF cache folder: the files carry their split in the name
        splits = sorted({s for s in map(split_of, names) if s})
        if splits:
            split = pick_split(files.url, split, splits)
            names = [name for name in names if split_of(name) == split]
        return names, "dataset_info.json", split if splits else no_split(files.url, split)
    return names, None, no_split(files.url, split)


def open_cached_arrow(files: RemoteFiles, listing: dict[str, StoredObject], relative: str) -> Any:
    """The Arrow file `relative` as a pyarrow Table memory-mapped from the node cache (fetched first when absent)."""
    stored = listing.get(relative)
    if stored is None:
        raise FormatError(f"{files.location.url(relative)}: listed by the dataset but not in the store at "
                          f"{files.client.endpoint}; upload the whole save_to_disk folder again")
    return files.cache.open(files.object_entry(relative, stored), open_arrow_table)


def list_remote_arrow_sources(files: RemoteFiles, listing: dict[str, StoredObject],
                              split: str | None = None) -> tuple[tuple[SourceInfo, ...], dict[str, Any]]:
    """One source per Arrow file, length = rows, counted from the file in the node cache."""
    names, descriptor, split = find_remote_arrow_files(files, listing, split)
    if not names:
        raise InputError(f"{files.url}: no .arrow files at {files.client.endpoint}; expected a save_to_disk folder or Arrow files")
    sources, schema, first, null_columns = [], None, None, set()
    for rel in names:
        rows, fields, nulls = file_shape(files, listing, rel)
        null_columns |= set(nulls)
        if schema is None:
            schema, first = fields, rel
        elif fields != schema:
            raise FormatError(f"Arrow files disagree: {first} has columns {schema}, {rel} has {fields}; expected one schema")
        sources.append(SourceInfo(path=rel, length=rows, size=listing[rel].size, mtime_ns=0))
    meta: dict[str, Any] = {"schema": schema, "split": split, "null_columns": sorted(null_columns)}
    if descriptor:
        meta["descriptor"] = {"file": descriptor, "etag": listing[descriptor].etag}
    return tuple(sources), meta


def shapes_dir() -> Path:
    """Where the rows and columns of remote Arrow files are recorded: `$XDG_CACHE_HOME/sdl/arrow-shapes`, beside (not in)
    the default object cache, so that the records never count against a `cache_limit`."""
    return default_cache_dir().parent / "arrow-shapes"


def file_shape(files: RemoteFiles, listing: dict[str, StoredObject], relative: str) -> tuple[int, dict[str, str], list[str]]:
    """(rows, {column: type}, columns holding a null) of a remote Arrow file: from the node's record of that object (keyed
    by its ETag, so a rewritten object is counted again), else counted from the file in the node cache and recorded."""
    if relative not in listing:
        open_cached_arrow(files, listing, relative)  # raises the one-line error naming the object
    entry = files.object_entry(relative, listing[relative])
    record = shapes_dir() / (hashlib.sha256(entry.name.encode()).hexdigest()[:32] + ".json")
    try:
        found = json.loads(record.read_text())
        return int(found["rows"]), dict(found["columns"]), list(found["null_columns"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not recorded yet (or a damaged record, or one from before null columns were recorded): count it
    table = open_cached_arrow(files, listing, relative)
    shape = table.num_rows, {f.name: str(f.type) for f in table.schema}, sorted(columns_with_nulls(table))
    try:
        atomic_write_json(record, {"object": entry.name, "rows": shape[0], "columns": shape[1], "null_columns": shape[2]})
    except OSError:
        pass  # a read-only home: counted again next time
    return shape
