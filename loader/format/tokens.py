"""The token dataset format, written by `sdl prepare` and read by `sdl.loader`.

A token dataset is a directory:

    manifest.json
    shard-000000.npy        1-D array of `tokens_per_shard` token ids (dtype uint16 or uint32)
    shard-000000.docs.npy   1-D int64 array: offsets inside the shard where a document starts (optional)
    shard-000001.npy        ...
    .sdl/                   caches (the global index); never part of the data

The shards are one token stream cut into pieces: every shard but the last holds exactly
`tokens_per_shard` tokens, documents run on across shard boundaries, each document is followed by
the EOS id (and/or preceded by the BOS id, as the manifest says). `.npy` because it is
self-describing: `np.load(path, mmap_mode="r")` reads a shard with numpy alone.

`manifest.json` (format "sdl-tokens", version 1):

    {
      "format": "sdl-tokens", "version": 1, "sdl_version": "0.1.0",
      "dtype": "uint16",                      # "uint16" when the vocabulary fits, else "uint32"
      "tokens_per_shard": 100000000,
      "tokenizer": {"name": "...", "vocab_size": 50257, "eos_id": 0, "bos_id": null, "hash": "sha256:..."},
      "append_eos": true, "prepend_bos": false,
      "piece_chars": 262144,                  # documents longer than this were encoded in pieces (null: never)
      "num_tokens": 123, "num_docs": 4,       # totals over the shards
      "shards": [{"file": "shard-000000.npy", "num_tokens": 100, "num_docs": 3,
                  "checksum": "sha256:<hex of the whole .npy file>", "docs_file": "shard-000000.docs.npy"}],
      "sources": [{"path": "...", "size": 1234, "fingerprint": "..."}],
      "job": {"num_jobs": 1, "job_index": 0},
      "parts": []                             # only in a joined dataset, see below
    }

`num_docs` of a shard counts the documents that start in it. A *joined* dataset (made by
`sdl index` over the outputs of `sdl prepare --num-jobs J`) has the same manifest, whose shard
`file`s are relative paths into the job folders (`job-00000/shard-000000.npy`) and whose `parts`
list those folders in job order: [{"path": "job-00000", "num_shards": 3, "num_tokens": ...}].
There "every shard but the last" holds per part.

`piece_chars`: a document longer than this many characters was encoded piece by piece, each piece
but the last ending right before the last whitespace character among the `piece_chars` characters
after its first (or after exactly `piece_chars` characters when there is none); its tokens are the
concatenation of the pieces' tokens (for byte-level BPE the same as encoding it whole). Absent or null
in datasets written before the rule: documents were encoded whole.

Readers refuse an unknown format name or version, unknown keys, a field of another JSON type than the one
shown (`sdl.loader.format.fields`; true is not 1), a shard `file`, `docs_file` or part `path` that is not a relative
path inside the dataset folder, and totals (`num_tokens`, `num_docs`, the parts') that are not the sums over
`shards`, with a message naming the field.
"""

from __future__ import annotations

import errno
import tokenize
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import FormatError, InputError
from sdl.loader.format.entries import what_is
from sdl.loader.format.fields import REWRITE, check_manifest_fields, check_value

FORMAT_NAME = "sdl-tokens"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CACHE_DIR = ".sdl"
SUPPORTED_DTYPES = ("uint16", "uint32")


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:06d}.npy"


def docs_name(shard_id: int) -> str:
    return f"shard-{shard_id:06d}.docs.npy"


def repair_hint(shard_path: str | Path) -> str:
    """What to do about a missing or damaged shard: the command that rewrites it from the recorded inputs."""
    return f"run `sdl prepare --repair {Path(shard_path).parent}` to rewrite it from the inputs that made it"


def dtype_for_vocab(vocab_size: int) -> str:
    """The narrowest supported dtype that holds every id below `vocab_size`."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardInfo:
    file: str
    num_tokens: int
    num_docs: int
    checksum: str
    docs_file: str | None = None

    def __post_init__(self) -> None:
        if self.num_tokens < 0 or self.num_docs < 0:
            raise FormatError(f"shard {self.file}: counts must be >= 0, found num_tokens={self.num_tokens}, num_docs={self.num_docs}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    dtype: str
    tokens_per_shard: int
    tokenizer: dict[str, Any]
    shards: tuple[ShardInfo, ...]
    append_eos: bool = True
    prepend_bos: bool = False
    piece_chars: int | None = None
    sources: tuple[dict[str, Any], ...] = ()
    job: dict[str, int] = field(default_factory=lambda: {"num_jobs": 1, "job_index": 0})
    parts: tuple[dict[str, Any], ...] = ()
    sdl_version: str = "0.1.0"

    def __post_init__(self) -> None:
        if self.dtype not in SUPPORTED_DTYPES:
            raise FormatError(f"manifest dtype is {self.dtype!r}, expected one of {', '.join(SUPPORTED_DTYPES)}")
        if self.tokens_per_shard <= 0:
            raise FormatError(f"manifest tokens_per_shard is {self.tokens_per_shard}, expected a positive integer")

    @property
    def num_tokens(self) -> int:
        return sum(shard.num_tokens for shard in self.shards)

    @property
    def num_docs(self) -> int:
        return sum(shard.num_docs for shard in self.shards)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get("vocab_size", 0))

    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        out.update(asdict(self))
        out["shards"] = [asdict(shard) for shard in self.shards]
        out["sources"] = list(self.sources)
        out["parts"] = list(self.parts)
        out["num_tokens"] = self.num_tokens
        out["num_docs"] = self.num_docs
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest.json") -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise FormatError(f"{where}: format is {data.get('format')!r}, expected {FORMAT_NAME!r}; this is not an sdl token dataset")
        check_value(where, "version", data.get("version"), int)  # "1" or true is damage, not another version
        if data.get("version") != FORMAT_VERSION:
            raise FormatError(
                f"{where}: format version {data.get('version')!r} is not supported (this sdl reads version {FORMAT_VERSION}); "
                "upgrade sdl or re-run sdl prepare"
            )
        body = {k: v for k, v in data.items() if k not in ("format", "version", "num_tokens", "num_docs")}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - known)
        if unknown:
            raise FormatError(f"{where}: unknown keys {unknown}; expected only {sorted(known)}")
        check_manifest_fields(data, where)
        try:
            body["shards"] = tuple(ShardInfo(**shard) for shard in body.get("shards", ()))
            body["sources"] = tuple(body.get("sources", ()))
            body["parts"] = tuple(body.get("parts", ()))
            manifest = cls(**body)
        except TypeError as exc:
            raise FormatError(f"{where}: malformed entry ({exc}); re-run sdl prepare to rewrite it") from None
        check_totals(manifest, data, where)
        return manifest


def check_totals(manifest: Manifest, data: dict[str, Any], where: str) -> None:
    """The totals a manifest records (top level, and per part of a joined dataset) are those of its shards."""
    totals = [(name, data[name], getattr(manifest, name)) for name in ("num_tokens", "num_docs") if name in data]
    if manifest.parts:
        totals += [("the sum of parts[].num_shards", sum(p.get("num_shards", 0) for p in manifest.parts), len(manifest.shards)),
                   ("the sum of parts[].num_tokens", sum(p.get("num_tokens", 0) for p in manifest.parts), manifest.num_tokens)]
    for name, recorded, actual in totals:
        if recorded != actual:
            raise FormatError(f"{where}: {name} is {recorded:,}, expected {actual:,} from the {len(manifest.shards):,} shards listed; {REWRITE}")


MANIFEST_FIX = ("re-run the sdl prepare command that made it (it writes the manifest again from its journal), or "
                "`sdl index DIR` for the joined manifest of --num-jobs outputs")


def read_manifest(directory: str | Path) -> Manifest:
    """Read and check `<directory>/manifest.json`."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.exists():
        raise InputError(f"{directory}: no such directory; expected a token dataset written by sdl prepare")
    if not path.is_file():
        found = what_is(path)
        if found != "no such file":  # a folder, a dangling link, …
            raise FormatError(f"{path}: {found}, expected the dataset's manifest file; remove it, then {MANIFEST_FIX}")
        raise FormatError(f"{directory}: no {MANIFEST_NAME}; expected a token dataset written by sdl prepare (run sdl prepare, or sdl index to join job folders)")
    return parse_manifest(path.read_bytes(), where=str(path))


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """The manifest in `raw` (the bytes of a manifest.json read from `where`, a local path or an object URL)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{where}: not valid JSON ({exc}); the file is corrupt: {MANIFEST_FIX}") from None
    if not isinstance(data, dict):
        raise FormatError(f"{where}: expected a JSON object, found a {type(data).__name__}; the file is corrupt: {MANIFEST_FIX}")
    return Manifest.from_dict(data, where=where)


def read_npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a `.npy` file, reading only its header."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            major, _minor = np.lib.format.read_magic(handle)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            offset = handle.tell()
    except FileNotFoundError:
        found = what_is(path)  # a dangling link is named as one
        raise FormatError(f"{path}: listed in the manifest but {'missing' if found == 'no such file' else found}; {repair_hint(path)}") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied; make the dataset's files readable for this user") from None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # out of file descriptors: nothing wrong with the file
            raise
        if exc.errno in (errno.EISDIR, errno.ELOOP):
            raise FormatError(f"{path}: {what_is(path)}, expected a .npy shard file; {repair_hint(path)}") from None
        raise FormatError(f"{path}: corrupt .npy header ({exc}); {repair_hint(path)}") from None
    except ValueError as exc:
        raise FormatError(f"{path}: corrupt .npy header ({exc}); {repair_hint(path)}") from None
    except (SyntaxError, tokenize.TokenError):  # numpy parses the header's dict as a Python literal
        raise FormatError(f"{path}: corrupt .npy header (its dict does not parse); {repair_hint(path)}") from None
    if fortran and len(shape) > 1:
        raise FormatError(f"{path}: Fortran-ordered array, expected a 1-D token array")
    return tuple(shape), np.dtype(dtype), offset


def open_shard(path: str | Path, expected_tokens: int | None = None) -> np.ndarray:
    """Memory-map one shard as a read-only 1-D array, checking its header and its length on disk."""
    path = Path(path)
    shape, dtype, offset = read_npy_header(path)
    if len(shape) != 1:
        raise FormatError(f"{path}: array of shape {shape}, expected a 1-D token array")
    if expected_tokens is not None and shape[0] != expected_tokens:
        raise FormatError(
            f"{path.name} holds {shape[0]:,} tokens, manifest says {expected_tokens:,}: the file was replaced; {repair_hint(path)}"
        )
    needed = offset + shape[0] * dtype.itemsize
    actual = path.stat().st_size
    if actual < needed:
        raise FormatError(
            f"{path.name} is {actual:,} bytes, its header needs {needed:,}: the file was truncated; {repair_hint(path)}"
        )
    if shape[0] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def read_docs(path: str | Path, num_docs: int) -> np.ndarray:
    """The document offsets in one `.docs.npy` (read whole), which the manifest says holds `num_docs` of them."""
    path = Path(path)
    try:
        starts = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FormatError(f"{path}: expected {num_docs:,} document offsets (listed in the manifest), found no such file; "
                          f"{repair_hint(path)}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(f"{path}: expected {num_docs:,} document offsets, found an unreadable file ({exc}); {repair_hint(path)}") from None
    if starts.shape != (num_docs,) or starts.dtype.kind not in "iu":
        raise FormatError(f"{path}: expected {num_docs:,} integer document offsets (manifest), found an array of shape {starts.shape} "
                          f"{starts.dtype}; {repair_hint(path)}")
    return starts


def file_checksum(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """The checksum the manifest records for a shard: sha256 of the whole `.npy` file."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    """The exact bytes of `array` as a `.npy` file (header + data), so a checksum can be taken before writing."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
