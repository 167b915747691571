"""`sdl prepare --repair OUT`: rewrite only the missing or damaged shards of a finished output, from the inputs its journal records.

The journal of a finished run keeps the options it ran with (`options`, paths absolute). Repair
checks every shard against the manifest (file present, sha256 checksum, docs file readable with
`num_docs` offsets, each where a document of the shard's tokens begins), then runs the same pipeline again up to
the last damaged shard, writing only the damaged ones, each only if its bytes give the checksum the manifest
records: inputs that changed since cannot silently put other tokens under the old manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import InputError
from sdl.loader.format.atomic import atomic_write_bytes
from sdl.loader.format.doc_starts import docs_problem
from sdl.loader.format.tokens import Manifest, file_checksum, npy_bytes, open_shard, read_manifest
from sdl.prepare.config import PrepareConfig
from sdl.prepare.encoder import EncodeOptions, encode_batches
from sdl.prepare.journal import read_journal
from sdl.prepare.lock import output_lock
from sdl.prepare.pipeline import keep_max_docs
from sdl.prepare.records import iter_batches
from sdl.prepare.sources import resolve_sources, split_for_job
from sdl.prepare.tokenizer import load_tokenizer
from sdl.prepare.writer import ShardWriter, write_npy


@dataclass(frozen=True, kw_only=True, slots=True)
class RepairReport:
    out: str
    num_shards: int
    rewritten: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "out": self.out, "num_shards": self.num_shards, "rewritten": list(self.rewritten)}


def damaged_shards(out: Path, manifest: Manifest) -> list[int]:
    """Ids of the shards whose file is missing or differs from its checksum, or whose docs file is unusable or records
    starts where no document of the shard's tokens begins (`sdl.loader.format.doc_starts`)."""
    damaged, before = [], None  # the last token of the shard before, when intact
    for shard_id, shard in enumerate(manifest.shards):
        path = out / shard.file
        tokens = open_shard(path, shard.num_tokens) if path.is_file() and file_checksum(path) == shard.checksum else None
        if tokens is None or not _docs_ok(out, shard, manifest, tokens, before):
            damaged.append(shard_id)
        before = int(tokens[-1]) if tokens is not None and len(tokens) else None
    return damaged


def _docs_ok(out: Path, shard: Any, manifest: Manifest, tokens: np.ndarray, before: int | None) -> bool:
    return not shard.docs_file or docs_problem(out / shard.docs_file, shard, manifest, tokens, before) is None


def repair(out: str | Path) -> RepairReport:
    """Check every shard of the finished output `out` and rewrite the damaged ones from the recorded inputs."""
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"{out}: no such folder; expected the output folder of a finished sdl prepare")
    _recorded_run(out)  # before the lock too: taking it would leave OUT/.sdl behind in a folder that is no dataset
    with output_lock(out):
        journal = _recorded_run(out)
        if not journal.complete:
            raise InputError(f"{out}: unfinished; re-run the same sdl prepare command to finish it (it resumes)")
        manifest = read_manifest(out)
        bad = damaged_shards(out, manifest)
        if bad:
            _rewrite(PrepareConfig(**journal.options, out=str(out)), manifest, bad)
    return RepairReport(out=str(out), num_shards=len(manifest.shards), rewritten=tuple(manifest.shards[i].file for i in bad))


def _recorded_run(out: Path) -> Any:
    """The journal of the run that wrote `out`, with its options; InputError when there is none."""
    journal = read_journal(out)
    if journal is None or not journal.options:
        raise InputError(f"{out}: no journal of the run that wrote it (.sdl/prepare-journal.json, from this sdl version); "
                         "re-run the sdl prepare command that made it with --overwrite")
    return journal


class _RepairWriter(ShardWriter):
    """A ShardWriter that writes only the shards in `bad`, each only when its bytes match the manifest's checksum."""

    def __init__(self, out: Path, manifest: Manifest, bad: list[int]) -> None:
        super().__init__(out, tokens_per_shard=manifest.tokens_per_shard, dtype=manifest.dtype)
        self.manifest, self.bad = manifest, set(bad)

    def _flush(self) -> None:
        if self.shard_id in self.bad:
            expected = self.manifest.shards[self.shard_id]
            data = npy_bytes(self._buffer[:self._fill])
            if "sha256:" + hashlib.sha256(data).hexdigest() != expected.checksum:
                raise InputError(f"{expected.file}: the recorded inputs no longer give the bytes the manifest records (they changed "
                                 f"since); re-run the sdl prepare command that made {self.out} with --overwrite to rewrite it all")
            doc_starts = np.concatenate(self._doc_starts) if self._doc_starts else np.zeros(0, dtype=np.int64)
            if expected.docs_file:
                write_npy(self.out / expected.docs_file, doc_starts.astype(np.int64))
            atomic_write_bytes(self.out / expected.file, data)
        self.shard_id, self._fill, self._doc_starts = self.shard_id + 1, 0, []


def _rewrite(config: PrepareConfig, manifest: Manifest, bad: list[int]) -> None:
    """Run the pipeline again up to the last damaged shard, writing only the damaged ones."""
    spec = load_tokenizer(config.tokenizer)
    if spec.identity() != manifest.tokenizer:
        raise InputError(f"tokenizer {config.tokenizer or spec.name!r} is not the one that wrote {config.out} (hash differs); "
                         "re-run the sdl prepare command that made it with --overwrite")
    files, split_records = split_for_job(resolve_sources(config.sources, config.text_suffixes, config.split, config.out), config.num_jobs, config.job_index)
    options = EncodeOptions(tokenizer_json=spec.json, dtype=manifest.dtype, text_field=config.text_field, on_error=config.on_error,
                            bos_id=spec.bos_id if config.prepend_bos else None, eos_id=spec.eos_id if config.append_eos else None,
                            piece_chars=config.piece_chars)
    batches = iter_batches(files, text_field=config.text_field, batch_bytes=config.batch_bytes, num_jobs=config.num_jobs,
                           job_index=config.job_index, split_records=split_records)
    writer, last, num_docs = _RepairWriter(Path(config.out), manifest, bad), max(bad), 0
    for batch in encode_batches(batches, options, config.num_proc):
        batch, done = keep_max_docs(batch, config.max_docs, num_docs, 0)
        if batch.error is not None and not done:
            raise InputError(batch.error)
        writer.add(batch.tokens, batch.lengths)
        num_docs += len(batch.lengths)
        if writer.shard_id > last or done:
            break
    if writer.shard_id <= last:
        writer.finish()
    if writer.shard_id <= last:
        raise InputError(f"{manifest.shards[last].file}: the recorded inputs now end before it (they changed since); "
                         f"re-run the sdl prepare command that made {config.out} with --overwrite to rewrite it all")
