"""The local HuggingFace datasets cache: find a dataset's Arrow files by name without calling `load_dataset`.

`datasets` writes a split as `<builder>-<split>.arrow`, or as N shards `<builder>-<split>-0000k-of-0000N.arrow`
(k = 0 … N-1, five digits each), and records each split's rows in `dataset_info.json`
(`{"splits": {"train": {"num_examples": 40, …}, …}}`; older versions wrote a list of `{"name": …}`). A split
with a shard missing, or whose files hold other than the recorded rows, is refused rather than read short.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sdl.loader.errors import FormatError, InputError

SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.arrow$")
REDOWNLOAD = ("the download or the `datasets` preparation was cut off; re-download it: load the dataset again with "
              "datasets.load_dataset(..., download_mode=\"force_redownload\"), or delete the folder and load it again")


def split_of(file_name: str) -> str | None:
    """The split of a HF cache file `<builder>-<split>[-00000-of-00003].arrow`."""
    shard = SHARD_NAME.match(file_name)
    stem = shard["stem"] if shard else file_name[: -len(".arrow")]
    return stem.rsplit("-", 1)[1] if "-" in stem else None


def check_shards_complete(where: Any, names: list[str]) -> None:
    """Refuse file names `<stem>-0000k-of-0000N.arrow` that are not all N shards of their stem (one count per stem)."""
    shards: dict[str, dict[int, set[int]]] = {}
    for name in names:
        if shard := SHARD_NAME.match(name):
            shards.setdefault(shard["stem"], {}).setdefault(int(shard["count"]), set()).add(int(shard["index"]))
    for stem, counts in sorted(shards.items()):
        if len(counts) > 1:
            found = ", ".join(f"{len(held)} of {count}" for count, held in sorted(counts.items()))
            raise FormatError(f"{where}: the shards of {stem} disagree on how many there are ({found}); expected one "
                              f"set {stem}-0000k-of-0000N.arrow; {REDOWNLOAD}")
        ((count, held),) = counts.items()
        missing = [f"{stem}-{k:05d}-of-{count:05d}.arrow" for k in range(count) if k not in held]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FormatError(f"{where}: {stem} is written as {count} shards but {len(missing)} of them "
                              f"{'is' if len(missing) == 1 else 'are'} missing ({shown}); expected all {count}; {REDOWNLOAD}")


def recorded_rows(info_file: Path, split: str | None) -> int | None:
    """The rows `dataset_info.json` records for `split`, or None where it records none (or cannot be read)."""
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no record to check against: the files alone say the rows
    splits = info.get("splits") if isinstance(info, dict) else None
    if isinstance(splits, list):
        splits = {entry.get("name"): entry for entry in splits if isinstance(entry, dict)}
    entry = splits.get(split) if isinstance(splits, dict) and split is not None else None
    rows = entry.get("num_examples") if isinstance(entry, dict) else None
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None


def check_split_rows(root: Path, split: str | None, num_rows: int) -> None:
    """Refuse a HF cache split whose Arrow files hold other than the rows its `dataset_info.json` records."""
    expected = recorded_rows(root / "dataset_info.json", split)
    if expected is not None and expected != num_rows:
        raise FormatError(f"{root}: split {split!r} holds {num_rows:,} rows in its Arrow files, dataset_info.json "
                          f"records {expected:,}; expected the recorded rows: files are missing or cut short; {REDOWNLOAD}")


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
    parts = name.split("/")
    if not name or len(parts) > 2 or any(part in ("", ".", "..") for part in parts):  # else a folder above a dataset's
        raise InputError(f"dataset name {name!r}: expected a HuggingFace name (name or organisation/name) as `datasets` "
                         "caches it; see `sdl index --help`")
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
