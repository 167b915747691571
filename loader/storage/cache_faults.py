"""What the node cache says when this machine's side fails: a cache folder it cannot create or write (a file in the
way, read-only, full). That is not the network's fault, so it is not retried as one."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from sdl.loader.errors import InputError
from sdl.loader.storage.client import LocalWriteError, os_error_text

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room (a full disk, a quota, a file-size limit), not no permission


def unusable_folder(root: Path, exc: OSError | LocalWriteError, entry: Any = None) -> InputError:
    """The error for the cache folder `root` refusing a write, naming the object `entry` (a CacheEntry) when there is one."""
    cause = exc.os_error if isinstance(exc, LocalWriteError) else exc
    todo = ("free space there, set a cache_limit that fits in it, or pass another cache_dir (or set XDG_CACHE_HOME)"
            if cause.errno in FULL else "pass a writable cache_dir or set XDG_CACHE_HOME")
    return InputError(f"{entry.url + ': ' if entry is not None else ''}cache_dir {root}: cannot create or write it "
                      f"({os_error_text(cause)}); {todo}")

