"""What a resumed `sdl prepare` may continue from, and how a run that met bad input leaves the folder as it found it.

A resume continues only over inputs unchanged where earlier runs read them: every input before the
journal's `position.source` has the identity it had (size, mtime, inode, inode change time: `sources`), and the
input at that position either too, or the same records up to the position (the journal's `prefix` digest, recorded when a run failed on
bad input there, so the user can fix a line past that point and re-run). Inputs not yet read may change.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from sdl.loader.errors import ConfigError, SdlError
from sdl.prepare.journal import Journal, load_shards, remove_output, write_journal
from sdl.prepare.records import prefix_digest
from sdl.prepare.sources import SourceFile


def input_fingerprints(files: tuple[SourceFile, ...]) -> tuple[str, ...]:
    return tuple(f.to_dict()["fingerprint"] for f in files)


def _records_read(journal: Journal) -> int:
    """Records of input `position.source` whose tokens are (partly, when carried) in the journalled shards."""
    return journal.position["record"] + (1 if journal.carry else 0)


def check_inputs(journal: Journal, files: tuple[SourceFile, ...], text_field: str, options: dict[str, Any]) -> Journal:
    """The journal to resume from, with today's input fingerprints and this run's `options` (what `--repair` re-runs);
    ConfigError if an input changed where it was read."""
    now = input_fingerprints(files)
    position = journal.position["source"]
    for i, (was, is_) in enumerate(zip(journal.inputs, now)):
        if was == is_ or i > position or (i == position and _records_read(journal) == 0):
            continue
        if i == position and journal.prefix == prefix_digest(files[i], _records_read(journal), text_field):
            continue
        raise ConfigError(f"{files[i].path} changed ({was} -> {is_}) where an earlier run already read it into the "
                          f"{journal.num_shards:,} shards kept in the output (its size, times or inode differ); restore the file as it "
                          "was read, or pass --overwrite to start again")
    return replace(journal, inputs=now, prefix=None, options=_resumed_options(journal, options))


def _resumed_options(journal: Journal, options: dict[str, Any]) -> dict[str, Any]:
    """This run's options, but `on_error` "skip" once a run skipped a record: over records that are all good "fail" and
    "skip" give the same bytes, and only "skip" gives them again over the part an earlier run skipped in."""
    return {**options, "on_error": "skip"} if journal.num_skipped else options


def roll_back(out: Path, start: Journal, files: tuple[SourceFile, ...], text_field: str) -> str:
    """Remove what this run added past the journal it started from; return what was kept, in words ('' if nothing).

    In an order a kill (or an error) may stop at any point and a re-run still resumes: first the journal goes back to
    `start` (it never counts a shard removed below), then the shard log is cut, then this run's shards are removed."""
    keep = start.num_shards
    try:
        if keep:
            write_journal(out, replace(start, prefix=_prefix(start, files, text_field)))
            load_shards(out, keep)  # cuts the shard log back to the kept shards
        remove_output(out, keep_shards=keep)
    except OSError as exc:  # what is journalled is whole either way: a re-run removes the shards past it, or keeps them
        return f"; could not remove this run's shards from {out} ({exc.strerror or exc}): the next run of the same command does"
    if not keep:
        return ""
    return (f"; kept the {keep:,} shards ({start.num_tokens:,} tokens) earlier runs wrote in {out}: fix the input and re-run the "
            "same command to continue from there, or re-run it with --on-error skip")


def _prefix(start: Journal, files: tuple[SourceFile, ...], text_field: str) -> str | None:
    """The digest of what earlier runs read of the input they stopped in; None when it cannot be read now (gone): a
    resume then needs that input unchanged."""
    source = start.position["source"]
    if source >= len(files):
        return None
    try:
        return prefix_digest(files[source], _records_read(start), text_field)
    except (SdlError, OSError):
        return None
