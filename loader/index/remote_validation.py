"""`sdl index --validate s3://…`: every object of a dataset in an object store read into a temporary folder, one
shard, Arrow file or zarr store at a time, and checked there exactly as a local one is (`validation_checks`).

Tokens: each shard and docs file of the manifest (a docs file against its shard's tokens). Arrow: each
file `state.json` names (or the listing finds), read and fully validated by pyarrow, all of one schema. Zarr: each
store's objects, every chunk its grid calls for present (or recorded as empty in an `.sdl/index.json` uploaded with
the dataset: zarr does not write all-fill chunks) and decoding. Nothing is cached or written to the store; the disk
needed is one store or file.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdl.loader.errors import SdlError
from sdl.loader.format.tokens import CACHE_DIR, MANIFEST_NAME
from sdl.loader.index.remote import (
    download_for_validation,
    read_remote_manifest,
    remote_kind,
)
from sdl.loader.index.table import INDEX_FILE
from sdl.loader.index.validation_checks import (
    ValidationFailure,
    check_listing,
    decode_all,
    missing_chunk_failures,
    reason,
    shard_tokens,
    validate_docs,
    validate_shard,
)
from sdl.loader.storage.remote import RemoteFiles, StoredObject

Progress = Callable[[int, int], None]
Check = Callable[[str, "str | None", list, Progress], tuple[int, int]]


def remote_check(url: str, kind: str | None) -> tuple[str, Check]:
    """(kind, check) for the dataset at `url`: a manifest makes it a token dataset, else its listing tells."""
    if kind is None:
        files = RemoteFiles(url)
        found = files.client.head(files.location.bucket, files.location.key(MANIFEST_NAME))
        kind = "tokens" if found is not None else remote_kind(files, files.listing())
    return kind, {"tokens": validate_remote_tokens, "zarr": validate_remote_zarr, "arrow": validate_remote_arrow}[kind]


def validate_remote_tokens(url: str, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    files = RemoteFiles(url)
    manifest, _ = read_remote_manifest(files)
    bytes_read, first, listing = 0, len(failures), []
    check_listing(manifest, sorted(files.listing()), listing, f"re-run the sdl prepare command that wrote {url} with --overwrite")
    with tempfile.TemporaryDirectory(prefix="sdl-validate-") as tmp:
        before = None  # the last token of the shard before, when it validated
        for done, shard in enumerate(manifest.shards):
            path, found = download_for_validation(files, shard.file, Path(tmp)) or Path(tmp) / "missing", len(failures)
            bytes_read += validate_shard(path, shard, manifest, failures)
            tokens = shard_tokens(path, shard) if len(failures) == found else None
            if shard.docs_file:
                docs = download_for_validation(files, shard.docs_file, Path(tmp)) or Path(tmp) / "missing"
                validate_docs(docs, shard, failures, manifest, tokens, before)
                docs.unlink(missing_ok=True)
            before = int(tokens[-1]) if tokens is not None and len(tokens) else None
            del tokens  # its map, before the file goes
            path.unlink(missing_ok=True)
            progress(done + 1, len(manifest.shards))
    fix = f"re-run the sdl prepare command that wrote {url} (it uploads only what differs)"
    failures[first:] = listing + [replace(failure, fix=fix) for failure in failures[first:]]  # not the temporary folder's repair
    return len(manifest.shards), bytes_read


def validate_remote_arrow(url: str, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    from sdl.loader.index.arrow import open_arrow_table
    from sdl.loader.index.remote_arrow import find_remote_arrow_files

    files = RemoteFiles(url)
    names, _, _ = find_remote_arrow_files(files, files.listing(), split)
    fix, bytes_read, schemas = f"upload the save_to_disk folder to {url} again", 0, {}
    with tempfile.TemporaryDirectory(prefix="sdl-validate-") as tmp:
        for done, rel in enumerate(names):
            path = download_for_validation(files, rel, Path(tmp))
            try:
                if path is None:
                    raise SdlError(f"{rel}: no such object at {files.client.endpoint}; {fix}")
                table = open_arrow_table(path)
                table.validate(full=True)
                bytes_read += table.nbytes
                schemas[rel] = {f.name: str(f.type) for f in table.schema}
            except Exception as exc:  # SdlError from the reader, ArrowInvalid from validate
                found, _ = reason(exc, path or Path(rel), fix)
                failures.append(ValidationFailure(file=rel, expected="an Arrow file whose every batch reads", found=found, fix=fix))
            if path is not None:
                path.unlink()
            progress(done + 1, len(names))
    odd = [rel for rel, schema in schemas.items() if schema != next(iter(schemas.values()))]
    if odd:
        first = next(iter(schemas))
        failures.append(ValidationFailure(file=url, expected="one schema in every file", fix="re-save the dataset (save_to_disk)",
                                          found=f"{first} has columns {schemas[first]}, {odd[0]} has {schemas[odd[0]]}"))
    return len(names), bytes_read


def validate_remote_zarr(url: str, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    from sdl.loader.index.remote_zarr import (
        find_remote_zarr_stores,
        list_remote_zarr_sources,
    )
    from sdl.loader.index.zarr import store_arrays

    files = RemoteFiles(url)
    listing = files.listing()
    try:
        list_remote_zarr_sources(files, listing)
    except SdlError as exc:
        found, fix = reason(exc, Path(url), "rewrite the odd stores")
        failures.append(ValidationFailure(file=url, expected="the same fields, trailing shapes and dtypes in every store",
                                          found=found, fix=fix))
    stores, recorded, bytes_read = find_remote_zarr_stores(listing), _recorded_absent(files, listing), 0
    for done, rel in enumerate(stores):
        first = len(failures)
        with tempfile.TemporaryDirectory(prefix="sdl-validate-") as tmp:
            _mirror(files, listing, rel, Path(tmp))
            for name, directory, meta in store_arrays(Path(tmp), rel):
                missing_chunk_failures(Path(tmp), name, directory, meta, recorded.get(name, ()), failures)
                bytes_read += decode_all(name, directory, meta, failures)
        failures[first:] = [replace(f, fix=f"upload it again from a copy of the store (if its items really are all fill value, "
                                      f"upload that copy's {CACHE_DIR}/{INDEX_FILE}, written by `sdl index`, which records it)")
                            if f.found.startswith("no such file") else f for f in failures[first:]]
        progress(done + 1, len(stores))
    return len(stores), bytes_read


def _mirror(files: RemoteFiles, listing: dict[str, StoredObject], store: str, folder: Path) -> None:
    """Download every object of `store` ("." for the prefix) into `folder`, keeping the layout."""
    start = "" if store == "." else f"{store}/"
    for key in listing:
        if key.startswith(start) and not key.startswith(f"{CACHE_DIR}/"):
            path = folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                files.client.download(files.location.bucket, files.location.key(key), handle)


def _recorded_absent(files: RemoteFiles, listing: dict[str, StoredObject]) -> dict[str, Any]:
    """The chunks that an index uploaded with the dataset (`.sdl/index.json`) records as absent (all fill value)."""
    key = f"{CACHE_DIR}/{INDEX_FILE}"
    if key not in listing:
        return {}
    try:
        data = json.loads(files.read(key))
    except ValueError:
        return {}
    return data.get("meta", {}).get("absent_chunks", {}) if isinstance(data, dict) and data.get("kind") == "zarr" else {}
