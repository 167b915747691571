"""The local HuggingFace datasets cache: find a dataset's Arrow files by name without calling `load_dataset`."""

from __future__ import annotations

import os
from pathlib import Path

from sdl.loader.errors import InputError


def hf_cache_dirs(cache_dir: str | Path | None = None) -> list[Path]:
    """Where `datasets` keeps its cache: cache_dir, else $HF_DATASETS_CACHE, else $HF_HOME/datasets, else ~/.cache."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    if os.environ.get("HF_DATASETS_CACHE"):
        return [Path(os.environ["HF_DATASETS_CACHE"])]
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return [hf_home / "datasets"]


def find_hf_dataset(name: str, *, cache_dir: str | Path | None = None, config: str | None = None) -> Path:
    """The folder of Arrow files of dataset `name` in the local HF cache, without calling load_dataset.

    Layout: <cache>/<name with / as ___>/<config>/<version>/<hash>/; the newest complete hash folder wins.
    """
    looked = []
    for cache in hf_cache_dirs(cache_dir):
        base = cache / name.replace("/", "___")
        looked.append(str(base))
        configs = sorted(p for p in base.glob("*") if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []
        if config is not None:
            configs = [p for p in configs if p.name == config or p.name.startswith(f"{config}-")]
        if len(configs) > 1:
            names = ", ".join(p.name for p in configs)
            raise InputError(f"dataset {name!r} has several configs in {base} ({names}); choose one with --hf-config")
        candidates = [h for c in configs for v in sorted(c.iterdir()) if v.is_dir() for h in v.iterdir()
                      if h.is_dir() and not h.name.endswith(".incomplete") and (h / "dataset_info.json").is_file()
                      and any(h.glob("*.arrow"))]
        if candidates:
            return max(candidates, key=lambda h: (h / "dataset_info.json").stat().st_mtime_ns)
    what = f"dataset {name!r}" + (f" config {config!r}" if config else "")
    raise InputError(
        f"{what} is not in the local HF datasets cache (looked in {', '.join(looked)}); load it once with "
        "datasets.load_dataset, or point --hf-cache (or HF_DATASETS_CACHE) at the cache it was loaded into"
    )
