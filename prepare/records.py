"""Reading records from source files in batches, from any (file, record) position, and turning a record into a document's text.

A record is a line of a JSONL file, a row of a Parquet/Arrow file, or a whole text file. The main
process reads raw records (bytes for JSONL and text files, strings for columnar files); workers parse
them with `record_text`, so JSON parsing runs in parallel with everything else.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdl.loader.errors import InputError
from sdl.prepare.sources import SourceFile, file_fingerprint

MAX_RECORDS_PER_BATCH = 4096


class RecordError(ValueError):
    """One record is malformed; with --on-error skip it is counted and skipped."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordBatch:
    source_index: int
    path: str
    kind: str
    records: tuple[int, ...]     # record index of each item inside its file
    items: tuple[Any, ...]       # bytes (jsonl line, text file) or str/None (columnar row)
    num_bytes: int               # bytes read from the file for this batch (all jobs' records)


def record_text(kind: str, item: Any, path: str, record: int, text_field: str) -> str | None:
    """The document text of one record; None for a blank JSONL line; RecordError when malformed."""
    if kind == "text":
        if (at := item.find(b"\0")) >= 0:  # valid UTF-8, yet never in text: UTF-16 without a byte-order mark, or binary
            line = item.count(b"\n", 0, at) + 1
            raise RecordError(f"{path}: a NUL byte at byte {at:,} (line {line:,}), expected UTF-8 text; "
                              "the file looks like UTF-16 or binary: convert it to UTF-8, or pass --on-error skip to skip such files")
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"{path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8, "
                              "or pass --on-error skip to skip such files") from None
    if kind == "jsonl":
        return _json_text(item, path, record + 1, text_field)
    if item is None:
        raise RecordError(f"{path}: row {record}: {text_field!r} is null, expected a string; "
                          "drop such rows, or pass --on-error skip to skip them")
    return item


def _json_text(line: bytes, path: str, line_no: int, text_field: str) -> str | None:
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except RecursionError:
        raise RecordError(f"{path}:{line_no}: JSON nested too deeply to parse; fix the line, "
                          "or pass --on-error skip to skip and count such lines") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise RecordError(f"{path}:{line_no}: malformed JSON ({detail}); fix the line, "
                          "or pass --on-error skip to skip and count such lines") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{path}:{line_no}: expected a JSON object, found {type(obj).__name__}; "
                          "each line must be an object like {\"text\": \"...\"}")
    if text_field not in obj:
        keys = ", ".join(list(obj)[:8]) or "none"
        raise RecordError(f"{path}:{line_no}: no field {text_field!r} (its fields: {keys}); "
                          "pass --text-field NAME to pick the field holding the text")
    text = obj[text_field]
    if not isinstance(text, str):
        raise RecordError(f"{path}:{line_no}: field {text_field!r} is a {_json_type(text)}, expected a string; "
                          "fix the line, pass --text-field NAME, or --on-error skip")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate escape such as "\ud83d": valid JSON, not text
        raise RecordError(f"{path}:{line_no}: field {text_field!r} holds a lone surrogate escape (\\u{ord(text[exc.start]):04x} at "
                          f"character {exc.start}), not valid Unicode text; fix the line, or pass --on-error skip to skip it") from None
    return text


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "list", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _jsonl_records(source: SourceFile, start: int) -> Iterator[tuple[int, bytes, int]]:
    opener = gzip.open if source.path.endswith(".gz") else open
    try:
        with opener(source.path, "rb") as handle:
            for record, line in enumerate(handle):
                if record >= start:
                    yield record, line, len(line)
    except (OSError, EOFError) as exc:
        raise InputError(f"{source.path}: unreadable ({exc}); check the file (a truncated .gz?)") from None


def _text_records(source: SourceFile, start: int) -> Iterator[tuple[int, bytes, int]]:
    if start == 0:
        try:
            data = Path(source.path).read_bytes()
        except OSError as exc:
            raise InputError(f"{source.path}: cannot read ({exc.strerror or exc}); check the file and its permissions") from None
        yield 0, data, len(data)


def _check_column(schema: Any, source: SourceFile, text_field: str) -> None:
    import pyarrow as pa

    if text_field not in schema.names:
        raise InputError(f"{source.path}: no column {text_field!r} (columns: {', '.join(schema.names[:8])}); "
                         "pass --text-field NAME to pick the column holding the text")
    kind = schema.field(text_field).type
    values = kind.value_type if pa.types.is_dictionary(kind) else kind  # dictionary-encoded text reads as its strings
    if not (pa.types.is_string(values) or pa.types.is_large_string(values) or str(values) == "string_view"):
        raise InputError(f"{source.path}: column {text_field!r} holds {kind}, expected strings; "
                         "pass --text-field NAME of a text column")


def _columnar_records(source: SourceFile, start: int, text_field: str) -> Iterator[tuple[int, str | None, int]]:
    """Rows of a Parquet or Arrow (IPC stream or file) table from row `start`, reading only the text column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if source.kind == "parquet":
            table = pq.ParquetFile(source.path)
            _check_column(table.schema_arrow, source, text_field)
            batches = table.iter_batches(batch_size=1024, columns=[text_field])
        else:
            batches = _arrow_batches(source.path)
            first = next(batches, None)
            if first is None:
                return
            _check_column(first.schema, source, text_field)
            batches = _chain(first, batches)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{source.path}: not a readable {source.kind} file ({exc}); check the file") from None
    row = 0
    try:  # pyarrow raises OSError (or ArrowInvalid) for damaged input data: a read error of this file, not of the output
        for batch in batches:
            if row + batch.num_rows <= start:
                row += batch.num_rows
                continue
            column = batch.column(batch.schema.get_field_index(text_field))
            values = column.slice(max(0, start - row)).to_pylist()
            row = max(row, start)
            for value in values:
                yield row, value, len(value.encode("utf-8")) if value is not None else 0
                row += 1
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{source.path}: cannot read past row {row:,} ({exc}): the file is damaged (corrupt or truncated); "
                         "re-create or remove it") from None


def _arrow_batches(path: str) -> Iterator[Any]:
    import pyarrow as pa

    source = pa.memory_map(path, "r")
    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(source)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    return iter(reader)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def iter_records(source: SourceFile, start: int, text_field: str) -> Iterator[tuple[int, Any, int]]:
    """(record index, raw item, bytes) of each record of `source` from record `start` on."""
    if source.kind == "jsonl":
        return _jsonl_records(source, start)
    if source.kind == "text":
        return _text_records(source, start)
    return _columnar_records(source, start, text_field)


def iter_batches(sources: tuple[SourceFile, ...], *, start_source: int = 0, start_record: int = 0, text_field: str = "text",
                 batch_bytes: int = 1 << 20, num_jobs: int = 1, job_index: int = 0,
                 split_records: bool = False) -> Iterator[RecordBatch]:
    """Batches of this job's records in input order, from position (start_source, start_record)."""
    for source_index in range(start_source, len(sources)):
        source = sources[source_index]
        start = start_record if source_index == start_source else 0
        records, items, size = [], [], 0
        for record, item, num_bytes in iter_records(source, start, text_field):
            size += num_bytes
            if not split_records or (source_index + record) % num_jobs == job_index:
                records.append(record)
                items.append(item)
            if size >= batch_bytes or len(records) >= MAX_RECORDS_PER_BATCH:
                yield RecordBatch(source_index=source_index, path=source.path, kind=source.kind,
                                  records=tuple(records), items=tuple(items), num_bytes=size)
                records, items, size = [], [], 0
        check_unchanged(source)
        if records or size:
            yield RecordBatch(source_index=source_index, path=source.path, kind=source.kind,
                              records=tuple(records), items=tuple(items), num_bytes=size)


def check_unchanged(source: SourceFile) -> None:
    """Refuse an input whose fingerprint changed since it was listed (appended to, rewritten) once it was read."""
    try:
        stat = os.stat(source.path)
    except OSError:
        stat = None
    if stat is None or file_fingerprint(stat) != source.fingerprint:
        now = "gone" if stat is None else f"{stat.st_size:,} bytes" + (", written in place" if stat.st_size == source.size else "")
        raise InputError(f"{source.path}: changed while sdl prepare read it (was {source.size:,} bytes, now {now}); "
                         "re-run once nothing writes to it any more")


def prefix_digest(source: SourceFile, num_records: int, text_field: str) -> str:
    """A digest of the first `num_records` records of `source`: what a resume checks of an input changed past them."""
    digest = hashlib.sha256()
    if num_records:
        for record, item, _ in iter_records(source, 0, text_field):
            if record >= num_records:
                break
            data = item if isinstance(item, bytes) else b"\xff" if item is None else item.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little") + data)
    return "sha256:" + digest.hexdigest()
