"""The prepare journal `<out>/.sdl/prepare-journal.json`: what a killed `sdl prepare` had finished, so a re-run continues.

Written atomically after every shard, once the shard's entry is appended (and fsynced) to the shard log
`<out>/.sdl/prepare-shards.jsonl` (one ShardInfo per line), so each shard costs O(1) however many
came before; lines beyond the journal's `num_shards` (a kill between the two writes) are dropped on
resume. `position` is the first input record whose tokens are not all
in the shards listed (`source` index into the resolved inputs, `record` inside that file) and `carry`
how many of its tokens are; a resume re-reads from there and drops the carried tokens, so the final
bytes equal an uninterrupted run's. `fingerprint` hashes the options that decide the output and the
inputs' real paths, so a re-run with different arguments is refused instead of mixing two datasets;
`inputs` holds each input's fingerprint (size, mtime, inode, inode change time: a resume refuses an input changed
where it was already read), `prefix` a digest of the records of input `position.source` before `position.record`
(set when a run failed on bad input, so that input may be fixed past that point and the run resumed),
and `options` the PrepareConfig fields (paths made absolute; the last run's) that `sdl prepare --repair OUT` re-runs.

    {"version": 2, "fingerprint": "sha256:…", "complete": false, "num_shards": 3, "num_tokens": 213,
     "position": {"source": 0, "record": 120}, "carry": 37, "num_docs": 119, "num_skipped": 1,
     "inputs": ["size=1234,mtime_ns=…,ino=…,ctime_ns=…"], "prefix": null, "options": {"sources": ["/data/a.jsonl"], …}}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdl.loader.errors import ConfigError, FormatError, InputError
from sdl.loader.format.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    remove_stale_temporaries,
)
from sdl.loader.format.tokens import CACHE_DIR, MANIFEST_NAME, ShardInfo
from sdl.prepare.sources import is_file_fingerprint

JOURNAL_VERSION = 2
JOURNAL_NAME = "prepare-journal.json"
SHARD_LOG_NAME = "prepare-shards.jsonl"


@dataclass(frozen=True, kw_only=True, slots=True)
class Journal:
    fingerprint: str
    complete: bool = False
    num_shards: int = 0
    num_tokens: int = 0
    position: dict[str, int] = field(default_factory=lambda: {"source": 0, "record": 0})
    carry: int = 0
    num_docs: int = 0        # documents taken from the input (the carried one included)
    num_skipped: int = 0     # malformed records skipped before `position`
    inputs: tuple[str, ...] = ()              # each input's file_fingerprint when this run began
    prefix: str | None = None                 # digest of input `position.source` before `position.record`
    options: dict[str, Any] = field(default_factory=dict)   # what `--repair` re-runs

    def to_dict(self) -> dict[str, Any]:
        return {"version": JOURNAL_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Journal:
        if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
            found = data.get("version") if isinstance(data, dict) else None
            raise FormatError(f"{where}: journal version {found!r}, expected {JOURNAL_VERSION} (written by another sdl version); "
                              "finish it with that version, or pass --overwrite to start again")
        body = {k: v for k, v in data.items() if k != "version"}
        body["inputs"] = tuple(body.get("inputs", ()))
        if not body.get("complete") and not all(map(is_file_fingerprint, body["inputs"])):
            # Refused, not resumed on size and mtime alone: those cannot show an input edited in place since, the
            # change this check exists for (a finished output's inputs are never checked again, so it still reads).
            raise FormatError(f"{where}: an unfinished run journalled by an earlier sdl, which recorded its inputs by size and "
                              "mtime only (too little to tell that one was edited in place since); finish it with that sdl, "
                              "or pass --overwrite to start again")
        try:
            return cls(**body)
        except TypeError as exc:
            raise FormatError(f"{where}: malformed journal ({exc}); pass --overwrite to start again") from None



def journal_path(out: Path) -> Path:
    return out / CACHE_DIR / JOURNAL_NAME


def shard_log_path(out: Path) -> Path:
    return out / CACHE_DIR / SHARD_LOG_NAME


def append_shard(out: Path, shard: ShardInfo) -> None:
    """Append one shard's entry to the shard log and fsync it (before the journal counts it)."""
    with open(shard_log_path(out), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(shard)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_shards(out: Path, num_shards: int) -> list[ShardInfo]:
    """The first `num_shards` entries of the shard log; later (unjournalled) lines are cut off the file."""
    if num_shards == 0:
        shard_log_path(out).unlink(missing_ok=True)
        return []
    path = shard_log_path(out)
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        shards = [ShardInfo(**json.loads(line)) for line in lines[:num_shards]]
    except (OSError, ValueError, TypeError) as exc:
        raise FormatError(f"{path}: unreadable shard log ({exc}); pass --overwrite to start again") from None
    if len(shards) < num_shards:
        raise FormatError(f"{path}: lists {len(shards)} shards, the journal {num_shards}; pass --overwrite to start again")
    if len(lines) > num_shards:
        atomic_write_bytes(path, "".join(lines[:num_shards]).encode("utf-8"))
    return shards


def write_journal(out: Path, journal: Journal) -> None:
    atomic_write_json(journal_path(out), journal.to_dict())


def fingerprint(options: dict[str, Any]) -> str:
    text = json.dumps(options, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def read_journal(out: Path) -> Journal | None:
    path = journal_path(out)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable journal ({exc}); pass --overwrite to start again") from None
    return Journal.from_dict(data, str(path))


SHARD_FILE = re.compile(r"shard-(\d{6})(\.docs)?\.npy")


def _ours(out: Path) -> list[Path]:
    """The files a prepare run writes in `out` (never anything else: `shard-backup.npy` is the user's), in the order they
    are removed: the manifest first, the journal (which alone says "complete", and how many shards to resume from) last."""
    shards = [p for p in out.glob("shard-*.npy") if SHARD_FILE.fullmatch(p.name)]
    return [out / MANIFEST_NAME, shard_log_path(out), *shards, journal_path(out)]


def remove_output(out: Path, keep_shards: int = 0) -> None:
    """Remove what prepare wrote in `out` beyond the first `keep_shards` shards (and, if 0, the journal), in an order a
    kill may stop at any point: the journal never counts a removed shard (the caller keeping shards has cut it back to
    them already; with none kept it is first cut back to no shards here) and goes last, so a run stopped midway resumes."""
    if not keep_shards:
        _forget_shards(out)
    for path in _ours(out):
        if (match := SHARD_FILE.fullmatch(path.name)) and int(match[1]) < keep_shards:
            continue
        if path in (journal_path(out), shard_log_path(out)) and keep_shards:
            continue
        path.unlink(missing_ok=True)
    remove_stale_temporaries(out)
    if (out / CACHE_DIR).is_dir():
        remove_stale_temporaries(out / CACHE_DIR)


def _forget_shards(out: Path) -> None:
    """The journal cut back to no shards (what a fresh run of its arguments starts from); an unreadable one removed."""
    try:
        journal = read_journal(out)
    except FormatError:  # nothing resumes from it, nor claims completeness with it
        journal_path(out).unlink(missing_ok=True)
        return
    if journal is not None and (journal.num_shards or journal.complete):
        write_journal(out, Journal(fingerprint=journal.fingerprint, inputs=journal.inputs, options=journal.options))


def remove_if_empty(out: Path) -> None:
    for folder in (out / CACHE_DIR, out):
        try:
            folder.rmdir()
        except OSError:
            pass


def claim_output(out: Path, print_: str, overwrite: bool) -> Journal | None:
    """The journal to resume from (None: start afresh), after refusing an output made with other arguments."""
    _check_writable(out)
    if overwrite:  # replace whatever this command wrote before, finished or not
        remove_output(out)
        return None
    journal = read_journal(out)
    if journal is not None and journal.fingerprint == print_:
        if not journal.complete:
            remove_output(out, keep_shards=journal.num_shards)  # shards written after the last journal entry
        return journal
    others = [p for p in out.iterdir() if p.name != CACHE_DIR]
    if journal is None and not others:
        return None
    what = "a dataset prepared with different arguments or inputs" if journal else "files not written by this sdl prepare"
    raise ConfigError(f"{out} already holds {what}; pass --overwrite to replace it, or choose another output folder")


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; OUT must be a folder (new or written by sdl prepare)")
    try:
        (out / CACHE_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / CACHE_DIR / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{out}: cannot write the output folder ({exc.strerror or exc}); choose a writable folder") from None


__all__ = ["Journal", "append_shard", "claim_output", "load_shards", "fingerprint", "read_journal", "remove_output", "remove_if_empty", "write_journal"]
