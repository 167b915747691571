"""Loader states inside checkpoints: find them, check them against a dataset, rewrite them for a new topology.

A checkpoint is a `.pt`/`.pth` file written by `torch.save` (read with `weights_only=True`: tensors,
containers, numbers, strings, and the data-only numpy types of `safe_globals()` — never code) or a
`.json` state file. Every dict with `"format": "sdl-loader-state"` anywhere in it (under any key,
inside lists, inside a torchdata StatefulDataLoader state dict) is a loader state; its *key path*
(`("loader", "_index_sampler_state")`) names it. States at the same key path across per-rank files
are one stream and merge into one state (`merge_states`). Rewriting replaces exactly those dicts and
shares every other object of the loaded checkpoint, so tensors are written back bit for bit.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdl.loader.atomic import atomic_write, atomic_write_json
from sdl.loader.errors import CheckpointError, ConfigError, InputError
from sdl.loader.reshard import merge_states, reshard_state
from sdl.loader.state import LoaderState, is_state_dict

SUFFIXES = (".pt", ".pth", ".json")
KeyPath = tuple  # of str | int: dict keys and list indices from the checkpoint's root
MAX_DEPTH = 64


def format_key(key: KeyPath) -> str:
    """("loader", "states", 0) -> "loader.states[0]"; the root itself is "<root>"."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in key).lstrip(".")
    return text or "<root>"


# Step: loading, never unpickling code.

def safe_globals() -> list[Any]:
    """The data-only globals a checkpoint may need beyond torch's defaults: numpy arrays, scalars and dtypes
    (what `np.random.get_state()`, numpy arrays and numpy scalars pickle to). `random.getstate()` is a tuple of ints."""
    import numpy as np
    import numpy.dtypes

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list[Any] = [np.ndarray, np.dtype, multiarray.scalar, multiarray._reconstruct,
                          (multiarray.scalar, "numpy.core.multiarray.scalar"),  # files written by numpy 1.x
                          (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [getattr(numpy.dtypes, name) for name in dir(numpy.dtypes)
                if name.endswith("DType") and name not in ("ObjectDType", "StringDType")]
    return allowed


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>")


def _refused_global(message: str) -> str | None:
    match = _REFUSED_GLOBAL.search(message)
    return (match.group(1) or match.group(2)) if match else None


def load_checkpoint(path: str | Path) -> Any:
    """The object stored in `path`: `torch.load(weights_only=True)` with numpy data types allowed, or JSON."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a checkpoint (.pt, .pth) or a loader state (.json)")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc}); expected a loader state written by sdl") from None
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused:
            raise CheckpointError(
                f"{path} needs the Python global {refused} to load, which could run code: sdl never unpickles code "
                "(torch.load weights_only=True); save plain data (tensors, dicts, lists, numbers, numpy arrays) instead"
            ) from None
        raise CheckpointError(f"{path}: not a torch checkpoint or truncated ({_first_line(exc)}); expected a file written by torch.save") from None
    except Exception as exc:  # torch.load reports a damaged file as RuntimeError, EOFError, KeyError, …
        raise CheckpointError(f"{path}: not a torch checkpoint or truncated ({_first_line(exc)}); expected a file written by torch.save") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:160] if lines else type(exc).__name__


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their .pt/.pth/.json files) and globs (`rank_*.pt`) -> the checkpoint files, in order."""
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted((p for p in item.iterdir() if p.suffix in SUFFIXES and p.is_file()), key=_natural)
            if not found:
                raise InputError(f"{item} holds no .pt, .pth or .json files; pass the checkpoint files themselves")
            files += found
        elif item.exists() or not glob.has_magic(str(item)):
            files.append(item)
        else:
            found = sorted((Path(p) for p in glob.glob(str(item))), key=_natural)
            if not found:
                raise InputError(f"{item} matches no files; expected checkpoint files such as rank_*.pt")
            files += found
    if not files:
        raise InputError("no checkpoint given; pass one or more checkpoint files, a folder or a glob")
    return list(dict.fromkeys(files))


def _natural(path: Path) -> list:
    """rank_2.pt before rank_10.pt."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


# Step: finding the states.

def find_states(obj: Any) -> list[tuple[KeyPath, dict]]:
    """Every serialised LoaderState in `obj` (nested dicts, lists, tuples), with its key path, in walk order."""
    found: list[tuple[KeyPath, dict]] = []
    _walk(obj, (), lambda key, value: found.append((key, value)) if is_state_dict(value) else None)
    return found


def _walk(obj: Any, key: KeyPath, visit: Callable[[KeyPath, Any], None], depth: int = 0) -> None:
    visit(key, obj)
    if depth >= MAX_DEPTH or is_state_dict(obj):
        return
    if isinstance(obj, dict):
        for name, value in obj.items():
            _walk(value, key + (name,), visit, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            _walk(value, key + (index,), visit, depth + 1)


def searched_keys(obj: Any, limit: int = 12) -> str:
    """The key paths of the dicts a search walked, for a "no loader state found" message."""
    keys: list[str] = []
    _walk(obj, (), lambda key, value: keys.append(format_key(key)) if isinstance(value, dict) else None)
    if not keys:
        return f"the file holds a {type(obj).__name__}, not a dict"
    top = [format_key((k,)) for k in obj] if isinstance(obj, dict) else []
    shown = ", ".join(top[:limit] or keys[:limit]) + (", …" if len(top or keys) > limit else "")
    return f"searched {len(keys)} dict(s) under the keys {shown}" if top else f"searched {len(keys)} dict(s): {shown}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Checkpoint:
    """One loaded checkpoint file and the loader states found in it, by key path."""

    path: Path
    content: Any
    states: dict[KeyPath, LoaderState]

    @property
    def is_json(self) -> bool:
        return self.path.suffix == ".json"


def read_checkpoint(path: str | Path) -> Checkpoint:
    content = load_checkpoint(path)
    found = find_states(content)
    if not found:
        raise CheckpointError(
            f"{path}: no sdl loader state found ({searched_keys(content)}); "
            "save `loader.state_dict()` in the checkpoint, under any key"
        )
    return Checkpoint(path=Path(path), content=content, states={key: LoaderState.from_dict(v) for key, v in found})


def read_checkpoints(inputs: Sequence[str | Path]) -> list[Checkpoint]:
    """Load every input and find its states (a file without a state is refused: it says which keys were searched)."""
    return [read_checkpoint(path) for path in resolve_inputs(inputs)]


def merge_streams(checkpoints: Sequence[Checkpoint]) -> dict[KeyPath, LoaderState]:
    """Per key path, the states of every file merged into one exact state (refused when they disagree)."""
    keys = list(dict.fromkeys(key for ckpt in checkpoints for key in ckpt.states))
    merged = {}
    for key in keys:
        try:
            merged[key] = merge_states([c.states[key] for c in checkpoints if key in c.states])
        except CheckpointError as exc:
            raise CheckpointError(f"states at {format_key(key)}: {exc}") from None
    return merged


# Step: checking a state against a dataset.

WINDOW_SETTINGS = ("seq_len", "stride", "shift", "split", "split_rate")


@dataclass(frozen=True, kw_only=True, slots=True)
class DatasetCheck:
    """How a loader state compares with a token dataset opened with the state's (or the given) window settings."""

    path: str
    fingerprint: str
    num_samples: int
    description: dict[str, Any]
    problems: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "matches": self.matches, "fingerprint": self.fingerprint,
                "num_samples": self.num_samples, "problems": list(self.problems)}


def check_dataset(state: LoaderState, path: str | Path, **settings: Any) -> DatasetCheck:
    """Open `path` as TokenWindows with the state's recorded settings (overridden by non-None `settings`) and compare."""
    from sdl.loader.windows import TokenWindows

    recorded = state.dataset or {}
    if recorded.get("kind", "tokens") != "tokens":
        raise ConfigError(f"the state was saved on a {recorded['kind']!r} dataset; --dataset checks token datasets only")
    chosen = {k: recorded[k] for k in WINDOW_SETTINGS if k in recorded}
    chosen |= {k: v for k, v in settings.items() if v is not None}
    if "seq_len" not in chosen:
        raise ConfigError("the state does not record its seq_len; pass --seq-len (and --stride) to check it against a dataset")
    windows = TokenWindows(path, **chosen)
    problems = [f"{k}: saved {recorded[k]!r}, checking with {chosen[k]!r}"
                for k in WINDOW_SETTINGS if k in recorded and recorded[k] != chosen.get(k)]
    if len(windows) != state.num_samples:
        problems.append(f"the state covers {state.num_samples:,} samples, the dataset gives {len(windows):,} with these settings")
    if windows.identity != state.fingerprint:
        cause = ("the dataset's files differ from those the state was saved on (re-prepared, modified, or another dataset)"
                 if not problems else "the dataset or its sample settings differ")
        problems.append(f"fingerprint {windows.identity} differs from the state's {state.fingerprint}: {cause}")
    return DatasetCheck(path=str(path), fingerprint=windows.identity, num_samples=len(windows),
                        description=windows.describe(), problems=tuple(problems))


def rebind_state(state: LoaderState, check: DatasetCheck) -> LoaderState:
    """The state moved onto the checked dataset (`--force`): its order key changes, so the rest of this epoch is
    not exactly-once with what was consumed before; the next epoch is."""
    cursor = min(state.cursor, check.num_samples)
    return replace(state, fingerprint=check.fingerprint, num_samples=check.num_samples, cursor=cursor,
                   consumed=state.consumed, dataset=check.description)


# Step: rewriting.

def replace_states(obj: Any, replacements: dict[KeyPath, Any], key: KeyPath = ()) -> Any:
    """`obj` with the values at the given key paths replaced; every untouched object is shared, not copied."""
    if key in replacements:
        return replacements[key]
    if not any(k[:len(key)] == key for k in replacements):
        return obj
    if isinstance(obj, dict):
        new = obj.copy()  # keeps an OrderedDict ordered and typed
        for name, value in obj.items():
            new[name] = replace_states(value, replacements, key + (name,))
        return new
    if isinstance(obj, (list, tuple)):
        return type(obj)(replace_states(v, replacements, key + (i,)) for i, v in enumerate(obj))
    return obj


@dataclass(frozen=True, kw_only=True, slots=True)
class RewriteResult:
    written: tuple[Path, ...]
    states: dict[KeyPath, LoaderState]  # as written (rank None; per-rank files set their rank)


def output_paths(checkpoints: Sequence[Checkpoint], world_size: int, out: str | Path | None, *,
                 per_rank: bool = False, in_place: bool = False, overwrite: bool = False) -> list[tuple[Path, int | None]]:
    """Where a rewrite goes, as (path, rank); refuses writing over an input (unless in_place) or an existing file."""
    inputs = {c.path.resolve() for c in checkpoints}
    if in_place:
        if per_rank or len(checkpoints) != 1 or (out is not None and Path(out).resolve() not in inputs):
            raise ConfigError("--in-place rewrites one input file into itself; with several inputs or --per-rank, write to --out")
        return [(checkpoints[0].path, None)]
    if out is None:
        raise ConfigError("give --out PATH for the rewritten checkpoint (or --in-place to replace a single input file)")
    suffix = ".json" if checkpoints[0].is_json else ".pt"
    out = Path(out)
    targets = [(out / f"rank_{r}{suffix}", r) for r in range(world_size)] if per_rank else [(out, None)]
    for path, _ in targets:
        if path.resolve() in inputs:
            raise ConfigError(f"{path} is an input checkpoint; sdl writes elsewhere unless --in-place is given")
        if path.exists() and not overwrite:
            raise InputError(f"{path} already exists; choose another --out, or pass --overwrite to replace it")
    if per_rank and out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --per-rank writes a folder of rank_<r>{suffix} files")
    return targets


def rewrite_checkpoint(checkpoints: Sequence[Checkpoint], *, world_size: int | None = None, batch_size: int | None = None,
                       out: str | Path | None = None, per_rank: bool = False, in_place: bool = False,
                       overwrite: bool = False, states: dict[KeyPath, LoaderState] | None = None) -> RewriteResult:
    """Write the first checkpoint's structure with every loader state replaced by the merged state resharded for
    `world_size`/`batch_size` (default: as saved); one file, or one per new rank. `states` overrides the merge."""
    # Step: the new states (refuses disagreeing states and world/batch sizes <= 0 before anything is written).
    merged = merge_streams(checkpoints) if states is None else states
    new = {key: reshard_state(s, s.world_size if world_size is None else world_size, batch_size) for key, s in merged.items()}
    target_world = next(iter(new.values())).world_size
    # Step: where to write; then each file atomically.
    targets = output_paths(checkpoints, target_world, out, per_rank=per_rank, in_place=in_place, overwrite=overwrite)
    base = checkpoints[0]
    for path, rank in targets:
        content = replace_states(base.content, {k: replace(s, rank=rank).to_dict() for k, s in new.items() if k in base.states})
        write_checkpoint(path, content, as_json=base.is_json)
    return RewriteResult(written=tuple(path for path, _ in targets), states=new)


def write_checkpoint(path: str | Path, content: Any, *, as_json: bool = False) -> Path:
    if as_json:
        return atomic_write_json(path, content)
    import torch

    return atomic_write(path, lambda handle: torch.save(content, handle))


__all__ = ["Checkpoint", "DatasetCheck", "RewriteResult", "check_dataset", "find_states", "format_key", "load_checkpoint",
           "merge_streams", "read_checkpoint", "read_checkpoints", "rebind_state", "replace_states", "resolve_inputs",
           "rewrite_checkpoint", "safe_globals", "write_checkpoint"]
