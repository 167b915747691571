"""`sdl index --validate`: read every byte of a dataset and report each failure (file, expected, found, fix).

Token datasets: each shard is listed once and exists, has a readable `.npy` header, the manifest's
length and dtype, is not truncated, matches the manifest's checksum, and holds only ids below the
vocabulary size; each docs file holds `num_docs` sorted offsets inside its shard, each where a document of the
shard's tokens can begin (`sdl.loader.format.doc_starts`); no `shard-NNNNNN`
file lies in the dataset (or a job folder of it) unlisted (a second writer's leftovers). Zarr: every chunk the arrays' shape and chunking call for exists (or was absent when the index was
built: zarr skips all-fill chunks) and decodes; a failure names the store, array and chunk key.
Arrow: every record batch of every file reads and passes pyarrow's full validation, and every row of an ArrayXD column
has the shape the file's `datasets` features declare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdl.loader.errors import SdlError
from sdl.loader.format.shard_files import dataset_folders
from sdl.loader.format.tokens import read_manifest
from sdl.loader.index.kinds import LISTERS, detect_kind
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
from sdl.loader.storage.location import is_remote

Progress = Callable[[int, int], None]


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
    An `s3://` dataset is read object by object into a temporary folder, each checked as a local file (see
    `sdl.loader.index.remote_validation`)."""
    if is_remote(root):
        from sdl.loader.index.remote_validation import remote_check

        kind, check = remote_check(str(root), kind)
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
    before = None  # the last token of the shard before, when it validated
    for done, shard in enumerate(manifest.shards):
        path, found = root / shard.file, len(failures)
        bytes_read += validate_shard(path, shard, manifest, failures)
        tokens = shard_tokens(path, shard) if len(failures) == found else None
        if shard.docs_file:
            validate_docs(root / shard.docs_file, shard, failures, manifest, tokens, before)
        before = int(tokens[-1]) if tokens is not None and len(tokens) else None
        progress(done + 1, len(manifest.shards))
    return len(manifest.shards), bytes_read



def _check_listing(root: Path, manifest: Any, failures: list) -> None:
    """Every shard listed once, and no shard file of the dataset's folders left unlisted."""
    present = [f"{folder}{path.name}" for folder in dataset_folders(manifest) for path in sorted((root / folder).glob("shard-*.npy"))]
    check_listing(manifest, present, failures, "re-run the sdl prepare command that made it with --overwrite")


def _listing_failure(root: Path, kind: str, split: str | None, failures: list) -> None:
    try:
        LISTERS[kind](root, **({"split": split} if split else {}))
    except SdlError as exc:
        found, fix = reason(exc, root, "rewrite the odd files")
        expected = "the same fields, trailing shapes and dtypes in every store" if kind == "zarr" else "one schema in every file"
        failures.append(ValidationFailure(file=str(root), expected=expected, found=found, fix=fix))


def _validate_zarr(root: Path, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    from sdl.loader.index.zarr import find_zarr_stores, store_arrays

    listing: list = []
    _listing_failure(root, "zarr", None, listing)
    stores, recorded = find_zarr_stores(root), _recorded_absent(root)
    bytes_read, unopened = 0, len(failures)
    for done, rel in enumerate(stores):
        try:
            arrays = store_arrays(root, rel)
        except SdlError as exc:
            found, fix = reason(exc, root / rel, "rewrite the store with zarr")
            failures.append(ValidationFailure(file=rel, expected="a zarr store that opens", found=found, fix=fix))
            continue
        for name, directory, meta in arrays:
            missing_chunk_failures(root, name, directory, meta, recorded.get(name, ()), failures)
            bytes_read += decode_all(name, directory, meta, failures)
        progress(done + 1, len(stores))
    if not any(f.expected == "a zarr store that opens" for f in failures[unopened:]):  # else that store's failure says it
        failures[unopened:unopened] = listing
    return len(stores), bytes_read


def _recorded_absent(root: Path) -> dict[str, list[str]]:
    """The chunks the cached index found absent when it was built (all fill value, as zarr leaves them), if it is fresh."""
    from sdl.loader.index.cache import load_cached_index

    try:
        cached = load_cached_index(root)
    except SdlError:  # stale or malformed: records nothing
        return {}
    return cached.meta.get("absent_chunks", {}) if cached is not None and cached.kind == "zarr" else {}





def _check_shapes(table: Any, rel: str, failures: list) -> None:
    """A failure for the first row of each ArrayXD column whose shape is not the one the file's features declare."""
    from sdl.loader.index.arrow_check import WrongShape, check_shape, declared_shapes

    for name, shape in declared_shapes(table.schema).items():
        first = 0
        for chunk in table.column(name).chunks:
            try:
                check_shape(chunk, shape, first)
            except WrongShape as exc:
                failures.append(ValidationFailure(file=rel, expected=f"column {name!r} of the declared shape {exc.shape} in every row",
                                                  found=f"{exc.found} items on axis {exc.axis} in row {exc.row:,} of the file",
                                                  fix="re-save the dataset with its features (save_to_disk)"))
                break
            first += len(chunk)


def _validate_arrow(root: Path, split: str | None, failures: list, progress: Progress) -> tuple[int, int]:
    from sdl.loader.index.arrow import find_arrow_files, open_arrow_table

    files, _, _ = find_arrow_files(root, split)
    bytes_read = 0
    for done, rel in enumerate(files):
        try:
            table = open_arrow_table(root / rel)
            table.validate(full=True)
            _check_shapes(table, rel, failures)
            bytes_read += table.nbytes
        except Exception as exc:  # FormatError from the reader, ArrowInvalid from validate
            found, fix = reason(exc, root / rel, "re-save the dataset (save_to_disk) or re-run load_dataset")
            failures.append(ValidationFailure(file=rel, expected="an Arrow file whose every batch reads", found=found, fix=fix))
        progress(done + 1, len(files))
    if not failures:
        _listing_failure(root, "arrow", split, failures)  # schemas agree
    return len(files), bytes_read
