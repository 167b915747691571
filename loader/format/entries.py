"""What an entry of a dataset folder is, in words, when it is not the plain file or folder that was expected: the
`found` of a one-line error (a dangling link is named as one, not as "no such file")."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from sdl.loader.errors import InputError


def what_is(path: str | Path) -> str:
    """"no such file", "a file", "a folder", "a dangling symbolic link (-> TARGET)", "a symbolic link loop (-> TARGET)",
    "a symbolic link to a folder (-> TARGET)", "a symbolic link to a file (-> TARGET)", or "a special file (…)"."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            return f"{'a symbolic link loop' if exc.errno == errno.ELOOP else 'a dangling symbolic link'} (-> {target})"
        return f"a symbolic link to {'a folder' if stat.S_ISDIR(mode) else 'a file'} (-> {target})"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a file" if stat.S_ISREG(mode) else "a special file (a pipe, socket or device)"


def is_broken_link(path: str | Path) -> bool:
    """Whether `path` is a symbolic link that leads nowhere: dangling, or a loop."""
    return os.path.islink(path) and not os.path.exists(path)


def refuse_broken_link(path: str | Path, root: str | Path) -> None:
    """A one-line InputError when `path`, an entry of the dataset folder `root`, is a link that leads nowhere: skipping
    it would leave out of the dataset what it led to (`sdl prepare` refuses one in an input folder likewise)."""
    if is_broken_link(path):
        raise InputError(f"{path}: {what_is(path)} in the dataset folder {root}; expected it to lead to a file or store of the "
                         "dataset (skipped, what it led to would be left out): fix or remove the link")
