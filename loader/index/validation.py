"""`sdl index --validate`: read every byte of a dataset and report each failure (file, expected, found, fix).

Token datasets: each shard is listed once and exists, has a readable `.npy` header, the manifest's
length and dtype, is not truncated, matches the manifest's checksum, and holds only ids below the
vocabulary size; each docs file holds `num_docs` sorted offsets inside its shard; no `shard-NNNNNN`
file lies in the dataset (or a job folder of it) unlisted (a second writer's leftovers). Zarr: every chunk the arrays' shape and chunking call for exists (or was absent when the index was
built: zarr skips all-fill chunks) and decodes; a failure names the store, array and chunk key.
Arrow: every record batch of every file reads and passes pyarrow's full validation.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import SdlError
from sdl.loader.format.tokens import file_checksum, read_manifest, read_npy_header, repair_hint
from sdl.loader.index.kinds import LISTERS, detect_kind
from sdl.loader.storage.location import is_remote

SHARD_FILE = re.compile(r"shard-\d{6}(\.docs)?\.npy")
Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class ValidationFailure:
    file: str
    expected: str
    found: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: expected {self.expected}, found {self.found}; {self.fix}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ValidationReport:
    kind: str
    root: str
    num_sources: int
    bytes_read: int
    failures: tuple[ValidationFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "kind": self.kind, "root": self.root, "ok": self.ok, "num_sources": self.num_sources,
                "bytes_read": self.bytes_read, "failures": [
                    {"file": f.file, "expected": f.expected, "found": f.found, "fix": f.fix} for f in self.failures]}


def validate_dataset(root: str | Path, kind: str | None = None, *, split: str | None = None,
                     progress: Progress | None = None) -> ValidationReport:
    """Read everything under `root` and return the report (never raises for a bad file: it lists it).
    An `s3://` token dataset is read object by object into a temporary folder, each checked as a local shard."""
    if is_remote(root):
        kind, check = "tokens", _validate_remote_tokens
    else:
        root = Path(root)
        kind = kind or detect_kind(root)
        check = {"tokens": _validate_tokens, "zarr": _validate_zarr, "arrow": _validate_arrow}[kind]
    failures: list[ValidationFailure] = []
    num_sources, bytes_read = check(root, split, failures, progress or (lambda done, total: None))
    return ValidationReport(kind=kind, root=str(root), num_sources=num_sources, bytes_read=bytes_read, failures=tuple(failures))


def _validate_tokens(root: Path, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    manifest = read_manifest(root)
    bytes_read = 0
    _check_listing(root, manifest, failures)
    for done, shard in enumerate(manifest.shards):
        path = root / shard.file
        bytes_read += _validate_shard(path, shard, manifest, failures)
        if shard.docs_file:
            _validate_docs(root / shard.docs_file, shard, failures)
        progress(done + 1, len(manifest.shards))
    return len(manifest.shards), bytes_read


def _validate_remote_tokens(url: str, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    from sdl.loader.index.remote import download_for_validation, read_remote_manifest
    from sdl.loader.storage.remote import RemoteFiles

    files = RemoteFiles(url)
    manifest, _ = read_remote_manifest(files)
    bytes_read, first = 0, len(failures)
    with tempfile.TemporaryDirectory(prefix="sdl-validate-") as tmp:
        for done, shard in enumerate(manifest.shards):
            path = download_for_validation(files, shard.file, Path(tmp)) or Path(tmp) / "missing"
            bytes_read += _validate_shard(path, shard, manifest, failures)
            path.unlink(missing_ok=True)
            if shard.docs_file:
                docs = download_for_validation(files, shard.docs_file, Path(tmp)) or Path(tmp) / "missing"
                _validate_docs(docs, shard, failures)
                docs.unlink(missing_ok=True)
            progress(done + 1, len(manifest.shards))
    fix = f"re-run the sdl prepare command that wrote {url} (it uploads only what differs)"
    failures[first:] = [replace(failure, fix=fix) for failure in failures[first:]]  # not the temporary folder's repair
    return len(manifest.shards), bytes_read


def _check_listing(root: Path, manifest: Any, failures: list) -> None:
    """Every shard listed once, and no shard file of the dataset's folders left unlisted."""
    listed = [name for shard in manifest.shards for name in (shard.file, shard.docs_file) if name]
    seen: set[str] = set()
    for name in listed:
        if name in seen:
            failures.append(ValidationFailure(file=name, expected="each shard listed once in manifest.json", found="it listed again",
                                              fix="two runs wrote this folder at once: re-run the sdl prepare command that made it with --overwrite"))
        seen.add(name)
    folders = [""] + [f"{part['path']}/" for part in manifest.parts if isinstance(part, dict) and "path" in part]
    for prefix in folders:
        for path in sorted((root / prefix).glob("shard-*.npy")):
            if SHARD_FILE.fullmatch(path.name) and f"{prefix}{path.name}" not in seen:
                failures.append(ValidationFailure(file=f"{prefix}{path.name}", expected="only shards listed in manifest.json",
                                                  found="a shard file the manifest does not list",
                                                  fix="another run wrote this folder at the same time: re-run the sdl prepare command that made it with --overwrite"))


def _validate_shard(path: Path, shard: Any, manifest: Any, failures: list) -> int:
    def fail(expected: str, found: str) -> int:
        failures.append(ValidationFailure(file=shard.file, expected=expected, found=found, fix=repair_hint(path)))
        return 0

    if not path.is_file():
        return fail(f"a shard of {shard.num_tokens:,} tokens (listed in the manifest)", "no such file")
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


def _validate_docs(path: Path, shard: Any, failures: list) -> None:
    def fail(expected: str, found: str) -> None:
        failures.append(ValidationFailure(file=str(shard.docs_file), expected=expected, found=found, fix=repair_hint(path)))

    try:
        starts = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return fail(f"{shard.num_docs:,} document offsets", f"an unreadable file ({exc})")
    if starts.ndim != 1 or len(starts) != shard.num_docs:
        return fail(f"{shard.num_docs:,} document offsets (manifest)", f"shape {starts.shape}")
    if len(starts) and (starts.min() < 0 or starts.max() >= max(shard.num_tokens, 1) or np.any(np.diff(starts) <= 0)):
        fail(f"increasing offsets in [0, {shard.num_tokens:,})", f"offsets from {int(starts.min())} to {int(starts.max())}, not all increasing")


def _reason(exc: Exception, path: Path, fix: str) -> tuple[str, str]:
    """(found, fix) from a one-line SdlError `PATH: what was found; what to do` (the failure names the file itself)."""
    text = str(exc).removeprefix(f"{path}: ")
    found, _, tail = text.rpartition("; ")
    return (found, tail) if found else (text, fix)


def _listing_failure(root: Path, kind: str, split: str | None, failures: list) -> None:
    try:
        LISTERS[kind](root, **({"split": split} if split else {}))
    except SdlError as exc:
        found, fix = _reason(exc, root, "rewrite the odd files")
        expected = "the same fields, trailing shapes and dtypes in every store" if kind == "zarr" else "one schema in every file"
        failures.append(ValidationFailure(file=str(root), expected=expected, found=found, fix=fix))


def _validate_zarr(root: Path, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    from sdl.loader.index.zarr import find_zarr_stores, store_arrays

    _listing_failure(root, "zarr", None, failures)
    stores, recorded = find_zarr_stores(root), _recorded_absent(root)
    bytes_read = 0
    for done, rel in enumerate(stores):
        try:
            arrays = store_arrays(root, rel)
        except SdlError as exc:
            failures.append(ValidationFailure(file=rel, expected="a zarr store that opens", found=str(exc), fix="rewrite the store with zarr"))
            continue
        for name, directory, meta in arrays:
            _missing_chunks(root, name, directory, meta, recorded.get(name, ()), failures)
            bytes_read += _decode_all(name, directory, meta, failures)
        progress(done + 1, len(stores))
    return len(stores), bytes_read


def _recorded_absent(root: Path) -> dict[str, list[str]]:
    """The chunks the cached index found absent when it was built (all fill value, as zarr leaves them), if it is fresh."""
    from sdl.loader.index.cache import load_cached_index

    try:
        cached = load_cached_index(root)
    except SdlError:  # stale or malformed: records nothing
        return {}
    return cached.meta.get("absent_chunks", {}) if cached is not None and cached.kind == "zarr" else {}


def _missing_chunks(root: Path, name: str, directory: Path, meta: dict, recorded: Any, failures: list) -> None:
    from sdl.loader.index.zarr import missing_chunks

    for key in sorted(set(missing_chunks(directory, meta)) - set(recorded)):
        failures.append(ValidationFailure(
            file=f"{name}/{key}", expected=f"chunk {key} (the array's shape and chunks call for it)",
            found="no such file: its items would read as the fill value",
            fix=f"restore it from a copy of the store; if its items really are all fill value, run `sdl index {root}` to record it as empty"))


def _decode_all(name: str, directory: Path, meta: dict, failures: list) -> int:
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
                    _decode_chunk(name, array, key, region, failures)
    return nbytes


def _decode_chunk(name: str, array: Any, key: str, region: tuple, failures: list) -> None:
    try:
        array[region]
    except Exception as exc:  # a codec error of any kind
        failures.append(ValidationFailure(file=f"{name}/{key}", expected=f"chunk {key} decodes (items {region[0].start}:{region[0].stop})",
                                          found=f"{type(exc).__name__}: {exc}", fix="restore this chunk from a copy of the store, or rewrite the array with zarr"))


def _validate_arrow(root: Path, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    from sdl.loader.index.arrow import find_arrow_files, open_arrow_table

    files, _, _ = find_arrow_files(root, split)
    bytes_read = 0
    for done, rel in enumerate(files):
        try:
            table = open_arrow_table(root / rel)
            table.validate(full=True)
            bytes_read += table.nbytes
        except Exception as exc:  # FormatError from the reader, ArrowInvalid from validate
            found, fix = _reason(exc, root / rel, "re-save the dataset (save_to_disk) or re-run load_dataset")
            failures.append(ValidationFailure(file=rel, expected="an Arrow file whose every batch reads", found=found, fix=fix))
        progress(done + 1, len(files))
    if not failures:
        _listing_failure(root, "arrow", split, failures)  # schemas agree
    return len(files), bytes_read
