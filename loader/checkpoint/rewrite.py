"""Rewriting the loader states inside checkpoints for a new world size or batch size, whole or not at all.

Rewriting replaces exactly the state dicts and shares every other object of the loaded checkpoint,
so tensors, optimizer state and the user's keys are written back bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdl.loader.checkpoint.find import Checkpoint, KeyPath, merge_streams
from sdl.loader.errors import ConfigError, InputError
from sdl.loader.format.atomic import atomic_write, remove_stale_temporaries
from sdl.loader.sampling.merge import reshard_state
from sdl.loader.sampling.state import LoaderState


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
    stale: tuple[Path, ...] = ()  # --per-rank: rank files of a larger world already in the folder, not rewritten


def output_paths(checkpoints: Sequence[Checkpoint], world_size: int, out: str | Path | None, *,
                 per_rank: bool = False, in_place: bool = False, overwrite: bool = False) -> list[tuple[Path, int | None]]:
    """Where a rewrite goes, as (path, rank); refuses writing over an input (unless in_place) or an existing file."""
    inputs = {c.path.resolve() for c in checkpoints}
    if in_place:
        if out is not None and Path(out).resolve() not in inputs:
            raise ConfigError(f"--in-place rewrites its input file into itself, and --out {out} names another file; give one "
                              "of them: --in-place, or --out PATH")
        if per_rank or len(checkpoints) != 1:
            raise ConfigError(f"--in-place rewrites one input file into itself; given {len(checkpoints)} input(s)"
                              f"{' and --per-rank' if per_rank else ''}: write to --out instead")
        return [(checkpoints[0].path.resolve(), None)]  # a symlink's target is rewritten; the link stays
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
                       overwrite: bool = False, states: dict[KeyPath, LoaderState] | None = None,
                       global_batch_size: int | None = None) -> RewriteResult:
    """Write the first checkpoint's structure with every loader state replaced by the merged state resharded for
    `world_size`/`batch_size`/`global_batch_size` (default: as saved); one file, or one per new rank. `states` overrides
    the merge."""
    # Step: the new states (refuses disagreeing states and world/batch sizes <= 0 before anything is written).
    merged = merge_streams(checkpoints) if states is None else states
    new = {key: reshard_state(s, s.world_size if world_size is None else world_size, batch_size, global_batch_size)
           for key, s in merged.items()}
    target_world = next(iter(new.values())).world_size
    # Step: where to write; then each file atomically.
    targets = output_paths(checkpoints, target_world, out, per_rank=per_rank, in_place=in_place, overwrite=overwrite)
    base = checkpoints[0]
    for path, rank in targets:
        content = replace_states(base.content, {k: replace(s, rank=rank).to_dict() for k, s in new.items() if k in base.states})
        write_checkpoint(path, content, keep_attributes=in_place)
    written = tuple(path for path, _ in targets)
    ranks = {p: int(p.stem[5:]) for p in Path(out).glob("rank_*") if p.stem[5:].isdigit()} if per_rank else {}
    stale = tuple(sorted((p for p, r in ranks.items() if r >= target_world), key=ranks.__getitem__))
    return RewriteResult(written=written, states=new, stale=stale)


def write_checkpoint(path: str | Path, content: Any, *, keep_attributes: bool = False) -> Path:
    """Write `content` atomically: JSON when `path` ends in .json, else `torch.save`. A killed earlier write's
    temporary files in the same folder are removed first; an unwritable place is refused in one line."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = (json.dumps(content, indent=2) + "\n").encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is a .json output, but the checkpoint holds data JSON cannot store ({exc}); "
                              "name the output .pt (or .pth) to write a torch checkpoint") from None
        save = lambda handle: handle.write(data)  # noqa: E731
    else:
        import torch

        def save(handle: Any) -> None:
            try:
                torch.save(content, handle)
            except RuntimeError as exc:  # a failed write, as torch's zip writer reports it ("unexpected pos …")
                raise InputError(f"cannot write {path}: torch.save failed ({str(exc).splitlines()[0][:200]}); the disk is "
                                 "likely full or the file-size limit (ulimit -f) reached: free space or choose another "
                                 "--out, then re-run (nothing was written)") from None
    try:
        if path.parent.is_dir():
            remove_stale_temporaries(path.parent, path.name)  # left by earlier rewrites of this file that were killed
        return atomic_write(path, save, keep_attributes=keep_attributes)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}; choose a writable --out location") from None
