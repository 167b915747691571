"""Joining the outputs of `sdl prepare --num-jobs J` (one folder per job) into one token dataset.

Each job folder holds a manifest whose `job` is {"num_jobs": J, "job_index": K}. The joined dataset
is the parent folder with a top-level `manifest.json` (the format of `sdl.loader.format.tokens`) whose shard
`file`s are relative paths into the job folders and whose `parts` list the folders in job order. No
shard is copied or rewritten. Parts must agree on tokenizer, dtype and tokens_per_shard, and every
job 0..J-1 must be present exactly once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdl.loader.errors import FormatError, InputError
from sdl.loader.format.atomic import atomic_write_json
from sdl.loader.format.tokens import MANIFEST_NAME, Manifest, read_manifest


def find_job_folders(root: Path) -> list[Path]:
    """The sub-folders of `root` that hold a token dataset manifest (job outputs), sorted by name."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())


def is_job_parent(root: Path) -> bool:
    """Whether `root` is (or was joined from) the output folders of a multi-job `sdl prepare`."""
    if (root / MANIFEST_NAME).is_file():
        try:
            data = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return joins_parts(data)
    return bool(find_job_folders(root))


def joins_parts(manifest: Any) -> bool:
    """Whether a parsed manifest is a join of job parts (a non-empty `parts` list)."""
    return isinstance(manifest, dict) and isinstance(manifest.get("parts"), list) and bool(manifest["parts"])


def join_jobs(root: str | Path) -> Manifest:
    """Write `<root>/manifest.json` joining the job folders under `root`; returns it. Rewrites only on change."""
    root = Path(root)
    parts = [(folder, read_manifest(folder)) for folder in find_job_folders(root)]
    if not parts:
        raise InputError(f"{root}: no job folders (sub-folders with {MANIFEST_NAME}); expected the outputs of sdl prepare --num-jobs")
    joined = join_manifests(root, parts)
    path = root / MANIFEST_NAME
    if not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != joined.to_dict():
        atomic_write_json(path, joined.to_dict())  # unchanged joins keep their mtime, so the index cache stays valid
    return joined


def join_manifests(root: str | Path, parts: list[tuple[Any, Manifest]]) -> Manifest:
    """The joined manifest of job parts [(folder, its manifest)] (a folder is anything with a `.name`: a local Path,
    or a PurePosixPath naming a job prefix in an object store), after checking that they belong together."""
    parts = sorted(parts, key=lambda part: part[1].job.get("job_index", 0))
    _check_parts(root, parts)
    first = parts[0][1]
    shards, sources, part_entries = [], [], []
    for folder, manifest in parts:
        prefix = folder.name
        shards += [replace(s, file=f"{prefix}/{s.file}", docs_file=f"{prefix}/{s.docs_file}" if s.docs_file else None)
                   for s in manifest.shards]
        sources += list(manifest.sources)
        part_entries.append({"path": prefix, "num_shards": len(manifest.shards), "num_tokens": manifest.num_tokens})
    return replace(first, shards=tuple(shards), sources=tuple(sources), parts=tuple(part_entries),
                   job={"num_jobs": 1, "job_index": 0})


def _setting(manifest: Manifest, what: str) -> object:
    """What must agree between parts; a tokenizer with a hash is the same whatever path each job named it by."""
    value = getattr(manifest, what)
    if what == "tokenizer" and value.get("hash"):
        return {k: v for k, v in value.items() if k not in ("name", "path")}
    return value


def _check_parts(root: str | Path, parts: list[tuple[Any, Manifest]]) -> None:
    first_folder, first = parts[0]
    num_jobs = first.job.get("num_jobs", 1)
    for folder, manifest in parts[1:]:
        for what in ("tokenizer", "dtype", "tokens_per_shard"):
            if _setting(manifest, what) != _setting(first, what):
                raise FormatError(
                    f"{folder.name} has {what} {getattr(manifest, what)!r}, {first_folder.name} has {getattr(first, what)!r}: "
                    "parts of one dataset must be prepared with the same tokenizer and settings; re-run sdl prepare for the odd part"
                )
        if manifest.job.get("num_jobs", 1) != num_jobs:
            raise FormatError(f"{folder.name} was prepared as one of {manifest.job.get('num_jobs')} jobs, {first_folder.name} as one of {num_jobs}; "
                              "join only the outputs of one sdl prepare --num-jobs run")
    indices = [manifest.job.get("job_index", 0) for _, manifest in parts]
    missing = sorted(set(range(num_jobs)) - set(indices))
    duplicated = sorted({i for i in indices if indices.count(i) > 1})
    if missing or duplicated or len(parts) != num_jobs:
        found = ", ".join(f"{f.name} (job {m.job.get('job_index')})" for f, m in parts)
        raise InputError(
            f"{root}: expected {num_jobs} jobs (0..{num_jobs - 1}), found {found}"
            + (f"; missing job(s) {missing}" if missing else "") + (f"; duplicated job(s) {duplicated}" if duplicated else "")
            + "; run sdl prepare --num-jobs {0} --job-index K for each missing K".format(num_jobs)
        )
