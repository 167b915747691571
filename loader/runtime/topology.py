"""Rank and world size: where the loader finds them, and the check against the process group when iteration starts.

Order: explicit arguments; torch.distributed when initialised; `RANK`/`WORLD_SIZE` (torchrun, Slurm wrappers);
`WORLD_SIZE` with `LOCAL_RANK` and no `RANK` — what Lightning's launcher sets — as `NODE_RANK × LOCAL_WORLD_SIZE
+ LOCAL_RANK` (on one node: `LOCAL_RANK`); else rank 0 of 1. A loader built before the process group exists
resolved from the environment or the default; when iteration starts and the group disagrees, `check_topology`
raises instead of letting two ranks read the same samples.
"""

from __future__ import annotations

import os

import torch
from sdl.loader.errors import ConfigError


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected an integer") from None


def _from_environment() -> tuple[int, int, str] | None:
    rank, world_size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if rank is not None:
        return rank, 1 if world_size is None else world_size, "the RANK/WORLD_SIZE environment variables"
    if world_size is None or world_size == 1:
        return (0, 1, "the WORLD_SIZE environment variable") if world_size == 1 else None
    node_rank, local_world_size = _env_int("NODE_RANK") or _env_int("GROUP_RANK") or 0, _env_int("LOCAL_WORLD_SIZE")
    if local_rank is not None and (node_rank == 0 or local_world_size):
        return node_rank * (local_world_size or 0) + local_rank, world_size, "the WORLD_SIZE/LOCAL_RANK environment variables"
    raise ConfigError(
        f"WORLD_SIZE={world_size} is set but not RANK (LOCAL_RANK={local_rank}, NODE_RANK={node_rank}, LOCAL_WORLD_SIZE="
        f"{local_world_size}): this process's rank is unknown; build the loader after the process group is initialised "
        "(e.g. in LightningModule.train_dataloader()), or pass rank= and world_size= to make_loader")


def find_topology(rank: int | None, world_size: int | None) -> tuple[int, int, str]:
    """(rank, world_size, where they came from): arguments, else the process group, else the environment, else 0/1."""
    if rank is not None and world_size is not None:
        return rank, world_size, "the rank= and world_size= arguments"
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        found = torch.distributed.get_rank(), torch.distributed.get_world_size(), "torch.distributed"
    elif (found := _from_environment()) is None:
        if rank is None and world_size not in (None, 1):  # every process would read as rank 0: the same samples
            raise ConfigError(f"world_size={world_size} was given without rank=, and no process group or RANK/LOCAL_RANK says "
                              "which rank this process is (every process would read as rank 0, the same samples); pass rank= "
                              "too, or build the loader after torch.distributed is initialised")
        found = (0, 1, "the default (no process group, no RANK/WORLD_SIZE)")
    source = found[2] if rank is None and world_size is None else f"{found[2]} and the arguments"
    return (found[0] if rank is None else rank), (found[1] if world_size is None else world_size), source


def resolve_topology(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size (see the module docstring for where they come from)."""
    return find_topology(rank, world_size)[:2]


def check_topology(rank: int, world_size: int, source: str) -> None:
    """Raise when torch.distributed is initialised and disagrees with the rank/world size the loader uses."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    group = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if group != (rank, world_size):
        raise ConfigError(
            f"the loader reads as rank {rank} of {world_size} (from {source}), but torch.distributed says rank {group[0]} of "
            f"{group[1]}: ranks would read the same samples; build the loader after init_process_group (in Lightning: in "
            "train_dataloader()), or pass the group's rank= and world_size= to make_loader")
