"""`PrepareConfig`: every option of `sdl prepare`, its documented default, and TOML loading with unknown-key errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomllib
from sdl.loader.errors import ConfigError
from sdl.prepare.tokenizer import PIECE_CHARS

DTYPES = ("auto", "uint16", "uint32")
ON_ERROR = ("fail", "skip")
MAX_TOKENS_PER_SHARD = 1 << 30   # a shard fills in memory before it is written: at most 4 GiB (uint32)
MAX_NUM_PROC = 4096  # a pool's semaphores overflow far above any machine's cores


@dataclass(frozen=True, kw_only=True, slots=True)
class PrepareConfig:
    """What `sdl prepare` does. `sources` are files, folders, globs, `stdlib:` or HuggingFace dataset names."""

    sources: tuple[str, ...]
    out: str
    tokenizer: str | None = None            # None: the byte-level BPE tokenizer bundled in sdl.prepare
    text_field: str = "text"                # JSONL/Parquet/Arrow column holding the document text
    text_suffixes: tuple[str, ...] = (".txt",)  # files with these suffixes are read whole, one document each
    split: str = "train"                    # split of a HuggingFace dataset name or a DatasetDict folder
    tokens_per_shard: int = 100_000_000
    dtype: str = "auto"                     # auto: uint16 when the vocabulary fits, else uint32
    append_eos: bool = True
    prepend_bos: bool = False
    max_docs: int | None = None
    piece_chars: int = PIECE_CHARS          # longer documents are encoded in pieces split at whitespace (bounded memory)
    num_proc: int = 1
    num_jobs: int = 1
    job_index: int = 0
    on_error: str = "fail"                  # a malformed record: fail, or skip it and count it
    overwrite: bool = False
    batch_bytes: int = 1 << 20              # text per batch sent to a worker; does not change the output

    def __post_init__(self) -> None:
        check_types({f.name: getattr(self, f.name) for f in fields(self)}, "PrepareConfig")
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        object.__setattr__(self, "text_suffixes", tuple(s if s.startswith(".") else f".{s}" for s in self.text_suffixes))
        if not self.sources:
            raise ConfigError("no input given; expected one or more files, folders, globs or dataset names before OUT")
        if not str(self.out):
            raise ConfigError("no output folder given; pass OUT as the last argument")
        _positive("tokens_per_shard", self.tokens_per_shard, "--tokens-per-shard")
        if self.tokens_per_shard > MAX_TOKENS_PER_SHARD:
            raise ConfigError(f"--tokens-per-shard is {self.tokens_per_shard:,}, expected at most {MAX_TOKENS_PER_SHARD:,} "
                              "(a shard is held in memory while it fills); pass a smaller value, e.g. 100000000")
        _positive("num_proc", self.num_proc, "--num-proc")
        if self.num_proc > MAX_NUM_PROC:
            raise ConfigError(f"--num-proc is {self.num_proc:,}, expected at most {MAX_NUM_PROC:,} worker processes; "
                              f"pass about the machine's core count ({os.cpu_count() or 1})")
        _positive("num_jobs", self.num_jobs, "--num-jobs")
        _positive("batch_bytes", self.batch_bytes, "batch_bytes")
        _positive("piece_chars", self.piece_chars, "piece_chars")
        if self.max_docs is not None:
            _positive("max_docs", self.max_docs, "--max-docs")
        if not 0 <= self.job_index < self.num_jobs:
            raise ConfigError(f"--job-index is {self.job_index}, expected 0 <= job index < --num-jobs ({self.num_jobs})")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype is {self.dtype!r}, expected one of {', '.join(DTYPES)}")
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"--on-error is {self.on_error!r}, expected one of {', '.join(ON_ERROR)}")

    def output_fields(self) -> dict[str, Any]:
        """The options that decide the output bytes: what a resume must match. Not how the inputs were spelled (their
        resolved files count), nor num_proc, overwrite, batch size, or on_error (a run it would fail never completes)."""
        skip = {"sources", "num_proc", "overwrite", "batch_bytes", "out", "on_error"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def journal_options(self) -> dict[str, Any]:
        """Every option but `out` and `overwrite`, paths made absolute: what `sdl prepare --repair OUT` runs again."""
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("out", "overwrite")}
        options["sources"] = [_absolute(s) for s in self.sources]
        if self.tokenizer is not None:
            options["tokenizer"] = _absolute(self.tokenizer)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _absolute(spec: str) -> str:
    """A path (or glob) made absolute; names that are not paths (`stdlib:`, `user/dataset`, `gpt2`) kept as they are."""
    path = Path(spec).expanduser()
    return os.path.abspath(path) if path.exists() or set("*?[") & set(spec) else spec


def check_types(values: dict[str, Any], where: str) -> None:
    """Refuse a value of the wrong type for its PrepareConfig field (a TOML `overwrite = "no"` must not read as true):
    booleans must be true/false, integers whole numbers (not booleans), texts strings, lists lists of strings."""
    kinds = {f.name: str(f.type) for f in fields(PrepareConfig)}
    for key, value in values.items():
        kind = kinds.get(key)
        if kind is None or (value is None and "None" in kind):
            continue
        if kind.startswith("tuple"):
            fits, expected = isinstance(value, (list, tuple)) and all(isinstance(v, (str, Path)) for v in value), "a list of strings"
        elif kind.startswith("bool"):
            fits, expected = isinstance(value, bool), "true or false"
        elif kind.startswith("int"):
            fits, expected = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        else:
            fits, expected = isinstance(value, (str, Path)), "a string"
        if not fits:
            raise ConfigError(f"{where}: {key} is {value!r} ({type(value).__name__}), expected {expected}; fix its value")


def _positive(name: str, value: Any, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{flag} is {value!r}, expected a positive integer")


def config_keys() -> list[str]:
    return [f.name for f in fields(PrepareConfig)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of PrepareConfig overrides (top level or a [prepare] table); unknown keys are refused."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; pass an existing .toml file, e.g. configs/demo.toml") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, expected a .toml config file; pass the file, e.g. configs/demo.toml") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror}); pass a readable .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file") from None
    if set(data) == {"prepare"} and isinstance(data["prepare"], dict):
        data = data["prepare"]
    known = config_keys()
    unknown = sorted(set(data) - set(known))
    if unknown:
        import difflib

        hints = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, known, n=1)) else key for key in unknown]
        raise ConfigError(f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                          f"expected only {', '.join(known)}")
    for key in ("sources", "text_suffixes"):
        if key in data and isinstance(data[key], str):
            data[key] = [data[key]]
    check_types(data, str(path))
    for key in ("sources", "text_suffixes"):
        if key in data:
            data[key] = tuple(data[key])
    return data


def make_config(base: dict[str, Any], overrides: dict[str, Any]) -> PrepareConfig:
    """Defaults < `base` (a config file) < `overrides` (flags given on the command line; None means not given)."""
    merged = dict(base)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("sources", "out"):
        if key not in merged:
            raise ConfigError(f"no {'input' if key == 'sources' else 'output folder'} given; "
                              "pass SOURCES... OUT on the command line or set it in the --config file")
    try:
        return PrepareConfig(**merged)
    except TypeError as exc:
        raise ConfigError(f"bad option value ({exc})") from None
