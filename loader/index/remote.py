"""The index of a token dataset in an object store: built from its manifest alone, in one request, no listing.

Every shard's length and checksum are in the manifest, so nothing else is read to open the dataset; each
shard's `.npy` header is checked when the cache opens it. Sizes and mtimes are not known (0): the
descriptor (the manifest's sha256) stands for them in the fingerprint. The identity is that of a local
copy of the same dataset, so a loader state moves between the two.
"""

from __future__ import annotations

import hashlib

from sdl.loader.format.tokens import MANIFEST_NAME, parse_manifest
from sdl.loader.index.table import GlobalIndex, SourceInfo
from sdl.loader.index.tokens import token_meta
from sdl.loader.storage.remote import RemoteFiles


def open_remote_index(url: str, files: RemoteFiles | None = None) -> GlobalIndex:
    """The index of the token dataset at `url` (s3://bucket/prefix), from one GET of its manifest."""
    files = files or RemoteFiles(url)
    raw = files.read(MANIFEST_NAME)
    manifest = parse_manifest(raw, where=files.location.url(MANIFEST_NAME))
    sources = tuple(SourceInfo(path=shard.file, length=shard.num_tokens, size=0, mtime_ns=0, checksum=shard.checksum)
                    for shard in manifest.shards)
    descriptor = {"file": MANIFEST_NAME, "sha256": hashlib.sha256(raw).hexdigest()}
    return GlobalIndex(kind="tokens", root=files.url, sources=sources, meta=token_meta(manifest, descriptor))
