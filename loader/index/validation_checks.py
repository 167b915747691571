"""The checks `sdl index --validate` runs on one file, chunk or array, local or fetched from an object store: each
failure is a ValidationFailure (file, expected, found, fix). What is checked is listed in `sdl.loader.index.validation`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import SdlError
from sdl.loader.format.doc_starts import docs_problem
from sdl.loader.format.entries import what_is
from sdl.loader.format.shard_files import unlisted_shards
from sdl.loader.format.tokens import file_checksum, open_shard, read_npy_header, repair_hint


@dataclass(frozen=True, kw_only=True, slots=True)
class ValidationFailure:
    file: str
    expected: str
    found: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: expected {self.expected}, found {self.found}; {self.fix}"


def validate_shard(path: Path, shard: Any, manifest: Any, failures: list) -> int:
    def fail(expected: str, found: str) -> int:
        failures.append(ValidationFailure(file=shard.file, expected=expected, found=found, fix=repair_hint(path)))
        return 0

    if not path.is_file():
        return fail(f"a shard of {shard.num_tokens:,} tokens (listed in the manifest)", what_is(path))  # a folder, a link loop, …
    try:
        shape, dtype, offset = read_npy_header(path)
    except SdlError as exc:
        return fail("a readable .npy header", str(exc).split(": ", 1)[-1].split(";")[0])
    if shape != (shard.num_tokens,):
        return fail(f"{shard.num_tokens:,} tokens (manifest)", f"an array of shape {shape}")
    if dtype != np.dtype(manifest.dtype):
        return fail(f"dtype {manifest.dtype} (manifest)", f"dtype {dtype}")
    size = path.stat().st_size
    if size < offset + shard.num_tokens * dtype.itemsize:
        return fail(f"{offset + shard.num_tokens * dtype.itemsize:,} bytes (header + {shard.num_tokens:,} tokens)", f"{size:,} bytes: truncated")
    if shard.checksum and file_checksum(path) != shard.checksum:
        fail(f"checksum {shard.checksum} (manifest)", f"{file_checksum(path)}: the bytes changed")
    vocab_size = manifest.vocab_size
    if vocab_size and shard.num_tokens:
        tokens = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        top = max(int(tokens[i:i + (1 << 24)].max()) for i in range(0, shard.num_tokens, 1 << 24))
        if top >= vocab_size:
            fail(f"token ids < vocab size {vocab_size:,}", f"id {top:,}")
    return size


def validate_docs(path: Path, shard: Any, failures: list, manifest: Any = None, tokens: np.ndarray | None = None,
                  before: int | None = None) -> None:
    """Check a shard's docs file: `num_docs` increasing offsets inside the shard and, given the shard's `tokens` (intact),
    each where a document of them begins (`sdl.loader.format.doc_starts`; `before`: the token before the shard)."""
    def fail(expected: str, found: str) -> None:
        failures.append(ValidationFailure(file=str(shard.docs_file), expected=expected, found=found, fix=repair_hint(path)))

    if problem := docs_problem(path, shard, manifest, tokens, before):
        fail(*problem)


def shard_tokens(path: Path, shard: Any) -> np.ndarray | None:
    """The tokens of a shard that validate_shard passed (memory-mapped), None if it could not."""
    try:
        return open_shard(path, expected_tokens=shard.num_tokens)
    except (SdlError, OSError):
        return None


def reason(exc: Exception, path: Path, fix: str) -> tuple[str, str]:
    """(found, fix) from a one-line SdlError `PATH: what was found; what to do` (the failure names the file itself)."""
    text = str(exc).removeprefix(f"{path}: ")
    found, _, tail = text.rpartition("; ")
    return (found, tail) if found else (text, fix)


def missing_chunk_failures(root: Path, name: str, directory: Path, meta: dict, recorded: Any, failures: list) -> None:
    from sdl.loader.index.zarr import missing_chunks

    for key in sorted(set(missing_chunks(directory, meta)) - set(recorded)):
        failures.append(ValidationFailure(
            file=f"{name}/{key}", expected=f"chunk {key} (the array's shape and chunks call for it)",
            found="no such file: its items would read as the fill value",
            fix=f"restore it from a copy of the store; if its items really are all fill value, run `sdl index {root}` to record it as empty"))


def decode_all(name: str, directory: Path, meta: dict, failures: list) -> int:
    """Decode every row band of one array; a band that fails is decoded chunk by chunk to name each bad chunk."""
    import zarr
    from sdl.loader.index.zarr import expected_chunks

    with warnings.catch_warnings():  # our `.sdl/` cache inside a store is "not a zarr component"
        warnings.simplefilter("ignore")
        try:
            array = zarr.open_array(str(directory), mode="r")
        except Exception as exc:  # zarr raises many types for a broken array
            failures.append(ValidationFailure(file=name, expected="a zarr array that opens", found=f"{type(exc).__name__}: {exc}",
                                              fix="rewrite the store with zarr"))
            return 0
    step, nbytes = max(1, array.chunks[0]), 0
    for start in range(0, array.shape[0], step):
        try:
            nbytes += array[start:start + step].nbytes
        except Exception:  # a codec error of any kind: find the chunks
            for key, region in expected_chunks(meta):
                if region[0].start == start:
                    decode_chunk(name, array, key, region, failures)
    return nbytes


def decode_chunk(name: str, array: Any, key: str, region: tuple, failures: list) -> None:
    try:
        array[region]
    except Exception as exc:  # a codec error of any kind
        failures.append(ValidationFailure(file=f"{name}/{key}", expected=f"chunk {key} decodes (items {region[0].start}:{region[0].stop})",
                                          found=f"{type(exc).__name__}: {exc}", fix="restore this chunk from a copy of the store, or rewrite the array with zarr"))


def check_listing(manifest: Any, present: list[str], failures: list, fix: str) -> None:
    """Every shard listed once in the manifest, and none of the shard files `present` (relative names) left unlisted."""
    listed = [name for shard in manifest.shards for name in (shard.file, shard.docs_file) if name]
    seen: set[str] = set()
    for name in listed:
        if name in seen:
            failures.append(ValidationFailure(file=name, expected="each shard listed once in manifest.json", found="it listed again",
                                              fix=f"two runs wrote this dataset at once: {fix}"))
        seen.add(name)
    for name in unlisted_shards(manifest, present):
        failures.append(ValidationFailure(file=name, expected="only shards listed in manifest.json", found="a shard file the manifest does not list",
                                          fix=f"another run wrote this dataset at the same time: {fix}"))
