"""Which files in a token dataset's folders are its shards: what `sdl index --validate` checks (locally and in an object
store) and what `sdl prepare … s3://` deletes after an `--overwrite` (an older dataset's shards past the new ones)."""

from __future__ import annotations

import re
from typing import Any

SHARD_FILE = re.compile(r"shard-\d{6}(\.docs)?\.npy")  # a shard or its docs file


def dataset_folders(manifest: Any) -> list[str]:
    """The folders a token dataset's shards lie in, relative, each ending in '/': the root (""), and its part folders."""
    return [""] + [f"{part['path']}/" for part in manifest.parts if isinstance(part, dict) and "path" in part]


def unlisted_shards(manifest: Any, present: list[str]) -> list[str]:
    """Those of the relative file names `present` that are shard or docs files of the dataset's folders but that the
    manifest does not list (a second writer's, or an older dataset's, leftovers)."""
    listed = {name for shard in manifest.shards for name in (shard.file, shard.docs_file) if name}
    folders = set(dataset_folders(manifest))
    out = []
    for name in present:
        folder, _, base = name.rpartition("/")
        if (folder + "/" if folder else "") in folders and SHARD_FILE.fullmatch(base) and name not in listed:
            out.append(name)
    return out
