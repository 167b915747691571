"""Finding loader states inside checkpoints: every dict with `"format": "sdl-loader-state"`, named by its key path.

Every such dict anywhere in a checkpoint (under any key, inside lists, inside a torchdata
StatefulDataLoader state dict) is a loader state; its *key path* (`("loader", "_index_sampler_state")`)
names it. States at the same key path across per-rank files are one stream and merge into one state
(`merge_states`).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdl.loader.checkpoint.safe_load import load_checkpoint
from sdl.loader.errors import CheckpointError, InputError
from sdl.loader.sampling.merge import merge_states
from sdl.loader.sampling.state import LoaderState, is_state_dict

SUFFIXES = (".pt", ".pth", ".json")
KeyPath = tuple  # of str | int: dict keys and list indices from the checkpoint's root
MAX_DEPTH = 64


def format_key(key: KeyPath) -> str:
    """("loader", "states", 0) -> "loader.states[0]"; the root itself is "<root>"."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in key).lstrip(".")
    return text or "<root>"


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their .pt/.pth/.json files) and globs (`rank_*.pt`) -> the checkpoint files, in order."""
    files: list[Path] = []
    if isinstance(inputs, (str, Path)):  # one path, not a sequence of its characters
        inputs = [inputs]
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
    states = {}
    for key, value in found:
        try:
            states[key] = LoaderState.from_dict(value)
        except CheckpointError as exc:  # name the file (and the key, when the state is not at the top)
            where = f"{path}" + (f" [{format_key(key)}]" if key else "")
            raise CheckpointError(f"{where}: {exc}") from None
    return Checkpoint(path=Path(path), content=content, states=states)


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
