"""`prepare(config)`: sources -> tokenizer -> fixed-size shard writer -> manifest, resumable, same bytes for any `num_proc`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sdl.loader.errors import ConfigError, InputError, SdlError
from sdl.loader.format.atomic import atomic_write_json
from sdl.loader.format.tokens import MANIFEST_NAME, Manifest, ShardInfo, read_manifest
from sdl.loader.storage.location import is_remote
from sdl.prepare.config import PrepareConfig
from sdl.prepare.encoder import EncodedBatch, EncodeOptions, encode_batches
from sdl.prepare.journal import (
    Journal,
    append_shard,
    claim_output,
    fingerprint,
    load_shards,
    remove_if_empty,
    write_journal,
)
from sdl.prepare.lock import output_lock
from sdl.prepare.records import iter_batches
from sdl.prepare.resume import check_inputs, input_fingerprints, roll_back
from sdl.prepare.sources import SourceFile, check_options_apply, resolve_sources, split_for_job
from sdl.prepare.tokenizer import TokenizerSpec, load_tokenizer, resolve_dtype
from sdl.prepare.upload import prepare_to_store
from sdl.prepare.writer import ShardWriter

REPORT_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class PrepareProgress:
    num_docs: int
    num_tokens: int
    num_bytes: int
    total_bytes: int
    num_shards: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PrepareReport:
    out: str
    status: str                 # "complete" (written now, fresh or resumed) or "already complete"
    resumed: bool
    num_docs: int
    num_tokens: int
    num_shards: int
    num_skipped: int
    num_sources: int
    input_bytes: int
    dtype: str
    tokens_per_shard: int
    tokenizer: dict[str, Any]
    job: dict[str, int]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"version": REPORT_VERSION, **asdict(self), "tokens_per_second": round(self.tokens_per_second, 1)}


def sdl_version() -> str:
    try:
        return version("streaming-dataloader")
    except PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass(slots=True)
class _Run:
    """What one run knows while it writes: the inputs, the journal so far, and counters for progress."""

    config: PrepareConfig
    files: tuple[SourceFile, ...]
    journal: Journal
    shards: list[ShardInfo]
    num_tokens: int
    num_bytes: int
    progress: Callable[[PrepareProgress], None] | None

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(PrepareProgress(num_docs=self.journal.num_docs, num_tokens=self.num_tokens, num_bytes=self.num_bytes,
                                          total_bytes=sum(f.size for f in self.files), num_shards=len(self.shards)))


def prepare(config: PrepareConfig, progress: Callable[[PrepareProgress], None] | None = None) -> PrepareReport:
    """Tokenize `config.sources` into a token dataset at `config.out`; resume or refuse an existing one.
    An `s3://bucket/prefix` OUT is prepared in a local staging folder and uploaded (`sdl.prepare.upload`)."""
    started = time.perf_counter()
    # Step: resolve the tokenizer, the dtype and the inputs, refusing what does not apply, before any output is touched
    # (an s3:// output's old manifest included); fingerprint what decides this job's output.
    spec = load_tokenizer(config.tokenizer)
    dtype = resolve_dtype(spec, config.dtype)
    _check_specials(spec, config)
    every = resolve_sources(config.sources, config.text_suffixes, config.split, config.out)
    defaults = PrepareConfig.__dataclass_fields__
    check_options_apply(config.sources, every, *(None if getattr(config, name) == defaults[name].default else getattr(config, name)
                                                 for name in ("split", "text_field")))
    if is_remote(config.out):
        return prepare_to_store(config, lambda local: prepare(local, progress))
    files, split_records = split_for_job(every, config.num_jobs, config.job_index)
    print_ = fingerprint({**config.output_fields(), "inputs": [f.real_path() for f in files], "tokenizer": spec.identity(), "dtype": dtype})
    out = Path(config.out)
    created, kept = not out.exists(), None
    with output_lock(out):
        # Step: claim the output folder: start afresh, resume from the journal, or find it complete.
        journal = claim_output(out, print_, config.overwrite)
        if journal is not None and journal.complete:
            if not _manifest_reads(out):  # removed or damaged since it was written: again, from the journal's shard log
                write_manifest(out, config, files, load_shards(out, journal.num_shards), spec, dtype)
            return _report(config, files, journal, dtype, spec, started, status="already complete", resumed=False)
        resumed = journal is not None and journal.num_shards > 0
        start = check_inputs(journal, files, config.text_field, config.journal_options()) if journal else Journal(
            fingerprint=print_, inputs=input_fingerprints(files), options=config.journal_options())
        # Step: encode and write; bad input removes what this run added, keeping what earlier runs journalled.
        try:
            with _writing(out):
                write_journal(out, start)
                shards = load_shards(out, start.num_shards)
            run = _Run(config=config, files=files, journal=start, shards=shards, num_tokens=start.num_tokens,
                       num_bytes=sum(f.size for f in files[:start.position["source"]]), progress=progress)
            _write(run, spec, dtype, split_records)
        except OutputWriteError:  # a full disk, a quota, a file-size limit: what was journalled stays whole
            raise
        except InputError as exc:
            kept = roll_back(out, start, files, config.text_field)
            error = InputError(f"{exc}{kept}")
        except OSError as exc:
            where = Path(exc.filename) if exc.filename else out
            if where.resolve() == out.resolve() or out.resolve() in where.resolve().parents:  # (mkstemp names absolute paths)
                raise OutputWriteError.of(out, exc) from None
            # An input read failure (the readers name the file in an InputError; this catches any other): like bad input.
            kept = roll_back(out, start, files, config.text_field)
            error = InputError(f"{where}: cannot read ({exc.strerror or exc}); check the file{kept}")
    if kept is not None:
        if created and not kept:
            remove_if_empty(out)
        raise error
    return _report(config, files, run.journal, dtype, spec, started, status="complete", resumed=resumed)


class OutputWriteError(InputError):
    """The output folder refused a write (a full disk, a quota, a file-size limit, permissions): nothing is rolled back."""

    @classmethod
    def of(cls, out: Path, exc: OSError) -> OutputWriteError:
        return cls(f"{out}: cannot write ({exc.strerror or exc}); every shard written so far is kept: "
                   "free space (or fix the cause) and re-run the same command to continue")


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Writes to `out` inside: their OSError is the output's (never taken for an input's read failure)."""
    try:
        yield
    except OSError as exc:
        raise OutputWriteError.of(out, exc) from None


def _check_specials(spec: TokenizerSpec, config: PrepareConfig) -> None:
    if config.append_eos and spec.eos_id is None:
        raise ConfigError(f"tokenizer {spec.name!r} has no EOS token to append after each document; "
                          "pass --no-eos, or a tokenizer whose tokenizer_config.json names an eos_token")
    if config.prepend_bos and spec.bos_id is None:
        raise ConfigError(f"tokenizer {spec.name!r} has no BOS token to prepend; drop --bos, or use a tokenizer with a bos_token")


def _write(run: _Run, spec: TokenizerSpec, dtype: str, split_records: bool) -> None:
    config, journal, out = run.config, run.journal, Path(run.config.out)
    writer = ShardWriter(out, tokens_per_shard=config.tokens_per_shard, dtype=dtype, next_shard_id=journal.num_shards)
    options = EncodeOptions(tokenizer_json=spec.json, dtype=dtype, text_field=config.text_field, on_error=config.on_error,
                            bos_id=spec.bos_id if config.prepend_bos else None, eos_id=spec.eos_id if config.append_eos else None,
                            piece_chars=config.piece_chars)
    batches = iter_batches(run.files, start_source=journal.position["source"], start_record=journal.position["record"],
                           text_field=config.text_field, batch_bytes=config.batch_bytes, num_jobs=config.num_jobs,
                           job_index=config.job_index, split_records=split_records)
    skip = journal.carry
    # Counters before the current batch; the carried document was counted when it started.
    num_docs, num_skipped = journal.num_docs - (1 if skip else 0), journal.num_skipped
    for batch in encode_batches(batches, options, config.num_proc):
        batch, done = keep_max_docs(batch, config.max_docs, num_docs, skip)
        if batch.error is not None and not done:
            raise InputError(batch.error)
        with _writing(out):
            for cut in writer.add(batch.tokens, batch.lengths, skip=skip):
                record, carry = _position(batch, cut.docs_done, cut.carry)
                append_shard(out, cut.shard)
                run.shards.append(cut.shard)
                journal = replace(journal, num_shards=len(run.shards), num_tokens=journal.num_tokens + cut.shard.num_tokens,
                                  position={"source": batch.source_index, "record": record}, carry=carry,
                                  num_docs=num_docs + cut.docs_done + (1 if carry else 0),
                                  num_skipped=num_skipped + sum(1 for r in batch.skipped if r < record))
                write_journal(out, journal)
        num_docs += len(batch.lengths)
        num_skipped += len(batch.skipped)
        run.num_tokens += len(batch.tokens) - skip
        run.num_bytes += batch.num_bytes
        run.journal = replace(journal, num_docs=num_docs, num_skipped=num_skipped)
        run.report_progress()
        skip = 0
        if done:
            break
    with _writing(out):
        _finish(run, writer, spec, dtype)


def keep_max_docs(batch: EncodedBatch, max_docs: int | None, num_docs: int, skip: int) -> tuple[EncodedBatch, bool]:
    """Keep only the documents `max_docs` still allows; True when the cap is reached."""
    if max_docs is None or num_docs + len(batch.lengths) < max_docs:
        return batch, False
    keep = max_docs - num_docs
    end = int(batch.lengths[:keep].sum())
    limit = int(batch.records[keep]) if keep < len(batch.records) else None
    skipped = tuple(r for r in batch.skipped if limit is None or r < limit)
    return replace(batch, records=batch.records[:keep], tokens=batch.tokens[:end], lengths=batch.lengths[:keep], skipped=skipped), True


def _position(batch: EncodedBatch, docs_done: int, carry: int) -> tuple[int, int]:
    """(record, carry) where a resume starts, for a cut after `docs_done` documents of `batch`."""
    if docs_done < len(batch.records):
        return int(batch.records[docs_done]), carry
    return int(batch.records[-1]) + 1, 0


def _finish(run: _Run, writer: ShardWriter, spec: TokenizerSpec, dtype: str) -> None:
    config, out = run.config, Path(run.config.out)
    journal = run.journal
    last = writer.finish()
    if last is not None:
        append_shard(out, last)
        run.shards.append(last)
        journal = replace(journal, num_shards=len(run.shards), num_tokens=journal.num_tokens + last.num_tokens)
    if journal.num_docs == 0:
        names = ", ".join(f.path for f in run.files[:3]) + (" …" if len(run.files) > 3 else "")
        raise InputError(f"no documents in the input ({names}{'; all records were skipped as malformed' if journal.num_skipped else ''}); "
                         "expected at least one document")
    write_manifest(out, config, run.files, run.shards, spec, dtype)
    run.journal = replace(journal, complete=True)
    write_journal(out, run.journal)


def _manifest_reads(out: Path) -> bool:
    try:
        read_manifest(out)
        return True
    except SdlError:
        return False


def write_manifest(out: Path, config: PrepareConfig, files: tuple[SourceFile, ...], shards: list, spec: TokenizerSpec,
                   dtype: str) -> None:
    """The dataset's manifest (written last: a folder without it is not a dataset yet)."""
    manifest = Manifest(dtype=dtype, tokens_per_shard=config.tokens_per_shard, tokenizer=spec.identity(), shards=tuple(shards),
                        append_eos=config.append_eos, prepend_bos=config.prepend_bos, piece_chars=config.piece_chars,
                        sources=tuple(f.to_dict() for f in files),
                        job={"num_jobs": config.num_jobs, "job_index": config.job_index}, sdl_version=sdl_version())
    atomic_write_json(out / MANIFEST_NAME, manifest.to_dict())


def _report(config: PrepareConfig, files: tuple[SourceFile, ...], journal: Journal, dtype: str, spec: TokenizerSpec,
            started: float, *, status: str, resumed: bool) -> PrepareReport:
    return PrepareReport(out=str(config.out), status=status, resumed=resumed, num_docs=journal.num_docs,
                         num_tokens=journal.num_tokens, num_shards=journal.num_shards,
                         num_skipped=journal.num_skipped, num_sources=len(files), input_bytes=sum(f.size for f in files),
                         dtype=dtype, tokens_per_shard=config.tokens_per_shard, tokenizer=spec.identity(),
                         job={"num_jobs": config.num_jobs, "job_index": config.job_index},
                         seconds=round(time.perf_counter() - started, 3))
