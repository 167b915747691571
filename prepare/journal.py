"""The prepare journal `<out>/.sdl/prepare-journal.json`: what a killed `sdl prepare` had finished, so a re-run continues.

Written atomically after every shard. `position` is the first input record whose tokens are not all
in the shards listed (`source` index into the resolved inputs, `record` inside that file) and `carry`
how many of its tokens are; a resume re-reads from there and drops the carried tokens, so the final
bytes equal an uninterrupted run's. `fingerprint` hashes the options and input fingerprints that decide
the output, so a re-run with different arguments is refused instead of mixing two datasets.

    {"version": 1, "fingerprint": "sha256:…", "complete": false, "shards": [<ShardInfo>…],
     "position": {"source": 0, "record": 120}, "carry": 37, "num_docs": 119, "num_skipped": 1}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sdl.loader.atomic import atomic_write_json, remove_stale_temporaries
from sdl.loader.errors import ConfigError, FormatError, InputError
from sdl.loader.format import CACHE_DIR, MANIFEST_NAME, ShardInfo

JOURNAL_VERSION = 1
JOURNAL_NAME = "prepare-journal.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class Journal:
    fingerprint: str
    complete: bool = False
    shards: tuple[ShardInfo, ...] = ()
    position: dict[str, int] = field(default_factory=lambda: {"source": 0, "record": 0})
    carry: int = 0
    num_docs: int = 0        # documents taken from the input (the carried one included)
    num_skipped: int = 0     # malformed records skipped before `position`

    def to_dict(self) -> dict[str, Any]:
        out = {"version": JOURNAL_VERSION, **asdict(self)}
        out["shards"] = [asdict(shard) for shard in self.shards]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Journal:
        if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
            raise FormatError(f"{where}: unknown journal version; pass --overwrite to start again")
        body = {k: v for k, v in data.items() if k != "version"}
        try:
            body["shards"] = tuple(ShardInfo(**shard) for shard in body.get("shards", ()))
            return cls(**body)
        except TypeError as exc:
            raise FormatError(f"{where}: malformed journal ({exc}); pass --overwrite to start again") from None

    def with_shard(self, shard: ShardInfo, **changes: Any) -> Journal:
        return replace(self, shards=self.shards + (shard,), **changes)


def journal_path(out: Path) -> Path:
    return out / CACHE_DIR / JOURNAL_NAME


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


def _ours(out: Path) -> list[Path]:
    """The files a prepare run writes in `out` (never anything else)."""
    return [*out.glob("shard-*.npy"), out / MANIFEST_NAME, journal_path(out)]


def remove_output(out: Path, keep_shards: int = 0) -> None:
    """Remove what prepare wrote in `out` beyond the first `keep_shards` shards (and, if 0, the journal)."""
    for path in _ours(out):
        if path.name.startswith("shard-") and int(path.name[6:12]) < keep_shards:
            continue
        if path == journal_path(out) and keep_shards:
            continue
        path.unlink(missing_ok=True)
    remove_stale_temporaries(out)
    if (out / CACHE_DIR).is_dir():
        remove_stale_temporaries(out / CACHE_DIR)


def remove_if_empty(out: Path) -> None:
    for folder in (out / CACHE_DIR, out):
        try:
            folder.rmdir()
        except OSError:
            pass


def claim_output(out: Path, print_: str, overwrite: bool) -> Journal | None:
    """The journal to resume from (None: start afresh), after refusing an output made with other arguments."""
    _check_writable(out)
    journal = read_journal(out)
    if journal is not None and journal.fingerprint == print_:
        if not journal.complete:
            remove_output(out, keep_shards=len(journal.shards))  # shards written after the last journal entry
        return journal
    others = [p for p in out.iterdir() if p.name != CACHE_DIR]
    if journal is None and not others:
        return None
    if not overwrite:
        what = "a dataset prepared with different arguments or inputs" if journal else "files not written by this sdl prepare"
        raise ConfigError(f"{out} already holds {what}; pass --overwrite to replace it, or choose another output folder")
    remove_output(out)
    return None


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


__all__ = ["Journal", "claim_output", "fingerprint", "read_journal", "remove_output", "remove_if_empty", "write_journal"]
