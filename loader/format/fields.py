"""The JSON types of a token dataset manifest's fields (the format is in `sdl.loader.format.tokens`), and the check
that refuses any other value, or a file named outside the dataset folder, naming the field."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from sdl.loader.errors import FormatError

# What each manifest field holds: (JSON type, null allowed). `bool` is not an `int` here (JSON true is not 1).
FIELD_TYPES = {"dtype": (str, False), "tokens_per_shard": (int, False), "tokenizer": (dict, False), "shards": (list, False),
               "append_eos": (bool, False), "prepend_bos": (bool, False), "piece_chars": (int, True), "sources": (list, False),
               "job": (dict, False), "parts": (list, False), "sdl_version": (str, False), "num_tokens": (int, False),
               "num_docs": (int, False)}
TOKENIZER_TYPES = {"name": (str, True), "path": (str, True), "vocab_size": (int, False), "eos_id": (int, True),
                   "bos_id": (int, True), "hash": (str, True)}
SHARD_TYPES = {"file": (str, False), "num_tokens": (int, False), "num_docs": (int, False), "checksum": (str, False),
               "docs_file": (str, True)}
JOB_TYPES = {"num_jobs": (int, False), "job_index": (int, False)}
PART_TYPES = {"path": (str, False), "num_shards": (int, False), "num_tokens": (int, False)}
JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
REWRITE = "the manifest is damaged or was edited by hand: re-run the sdl prepare command that made it with --overwrite"


def check_value(where: str, name: str, value: Any, kind: type, nullable: bool = False) -> None:
    """Refuse a manifest value that is not of JSON type `kind` (or null, where `nullable`), naming the field."""
    if (value is None and nullable) or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return
    found = "null" if value is None else f"{json.dumps(value)[:60]} ({JSON_NAMES.get(type(value), type(value).__name__)})"
    raise FormatError(f"{where}: {name} is {found}, expected {JSON_NAMES[kind]}{' or null' if nullable else ''}; {REWRITE}")


def check_entries(where: str, name: str, entry: dict[str, Any], types: dict[str, tuple[type, bool]]) -> None:
    for key, (kind, nullable) in types.items():
        if key in entry:
            check_value(where, f"{name}.{key}" if name else key, entry[key], kind, nullable)


def check_relative(where: str, name: str, value: str) -> None:
    """A file the manifest names lies inside the dataset folder: a relative path without `..`."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if not parts or value.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        raise FormatError(f"{where}: {name} is {value!r}, expected a relative path inside the dataset folder (no leading /, "
                          f"no drive, no '..'); {REWRITE}")


def check_manifest_fields(data: dict[str, Any], where: str) -> None:
    """Every field of a manifest read from `where` has its JSON type, and every file it names lies inside the dataset."""
    check_entries(where, "", data, FIELD_TYPES)
    check_entries(where, "tokenizer", data.get("tokenizer", {}), TOKENIZER_TYPES)
    check_entries(where, "job", data.get("job", {}), JOB_TYPES)
    for name, types in (("shards", SHARD_TYPES), ("parts", PART_TYPES), ("sources", {})):
        for i, entry in enumerate(data.get(name, ())):
            check_value(where, f"{name}[{i}]", entry, dict)
            check_entries(where, f"{name}[{i}]", entry, types)
            for key in ("file", "docs_file", "path") if name != "sources" else ():
                if isinstance(entry.get(key), str):
                    check_relative(where, f"{name}[{i}].{key}", entry[key])
