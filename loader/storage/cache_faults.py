"""What the node cache says when this machine's side fails: a cache folder it cannot create or write (a file in the
way, read-only, full), and an object whose copy just fetched from the store does not open. Neither is the network's
fault, so neither is retried as one."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from sdl.loader.errors import FormatError, InputError
from sdl.loader.storage.client import LocalWriteError, os_error_text

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room (a full disk, a quota, a file-size limit), not no permission


def unusable_folder(root: Path, exc: OSError | LocalWriteError, entry: Any = None) -> InputError:
    """The error for the cache folder `root` refusing a write, naming the object `entry` (a CacheEntry) when there is one."""
    cause = exc.os_error if isinstance(exc, LocalWriteError) else exc
    todo = ("free space there, set a cache_limit that fits in it, or pass another cache_dir (or set XDG_CACHE_HOME)"
            if cause.errno in FULL else "pass a writable cache_dir or set XDG_CACHE_HOME")
    return InputError(f"{entry.url + ': ' if entry is not None else ''}cache_dir {root}: cannot create or write it "
                      f"({os_error_text(cause)}); {todo}")


def damaged_in_store(entry: Any, path: Path, exc: FormatError, endpoint: str) -> FormatError:
    """The error for an object whose fresh copy at `path` does not open: named by its URL, with what the opener found but
    not the opener's advice (the text after its last '; '), which is for a local file: the fix is in the store."""
    found = str(exc).replace(str(path), entry.url).replace(path.name, entry.url).rsplit("; ", 1)[0]
    found = found if found.startswith(entry.url) else f"{entry.url}: {found}"
    return FormatError(f"{found}, in a copy just fetched from {endpoint}; the object in the store is damaged: upload a good "
                       "copy of it again")
