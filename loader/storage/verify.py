"""A verified download: the object lands in a part file whose sha256 matches the manifest, or a clear error.

A mismatch is fetched once more (a transfer can be corrupted on the way, or an upload was replaced mid-read);
a second mismatch means the stored object itself is wrong, and is reported naming the object and the fix.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sdl.loader.errors import StorageError
from sdl.loader.storage.client import S3Client

ATTEMPTS = 2


def checked_download(client: S3Client, entry: Any, part: Path) -> int:
    """Download `entry` (a CacheEntry) into `part` (already sized to its bound), verify, fsync; return its size."""
    found = ""
    for _attempt in range(ATTEMPTS):
        digest = hashlib.sha256()
        with open(part, "r+b") as handle:
            size = client.download(entry.bucket, entry.key, handle, on_chunk=digest.update)
            if size > entry.max_bytes:
                found = f"{size:,} bytes, more than the {entry.max_bytes:,} its manifest entry allows"
                handle.truncate(entry.max_bytes)  # keep within the reservation while we retry
                continue
            found = "sha256:" + digest.hexdigest()
            if entry.checksum is None or found == entry.checksum:
                handle.flush()
                os.fsync(handle.fileno())
                return size
            handle.truncate(entry.max_bytes)
    raise StorageError(f"{entry.url}: checksum {entry.checksum}, the object read twice gives {found}: the stored object "
                       f"is corrupt or was replaced; re-upload it (re-run sdl prepare with the same arguments to the same OUT)")
