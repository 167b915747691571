"""Joining job prefixes in an object store (`sdl prepare --num-jobs J` to `s3://…/job-0000K`) like job folders.

A tool (`sdl index`), not the training path: it lists the prefix once, which training never does.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from sdl.loader.errors import FormatError
from sdl.loader.format.tokens import MANIFEST_NAME, Manifest
from sdl.loader.index.join import join_manifests, joins_parts
from sdl.loader.index.remote import read_remote_manifest
from sdl.loader.storage.client import Missing
from sdl.loader.storage.remote import RemoteFiles


def join_remote_jobs(url: str) -> Manifest | None:
    """Join the job prefixes under `url` (outputs of sdl prepare --num-jobs, each with a manifest) like local job
    folders: write `url/manifest.json` when it changed; None when `url` holds no job prefixes (one listing), or is a
    dataset of its own (a manifest that joins no parts, whatever datasets lie under it: never rewritten)."""
    files = RemoteFiles(url)
    try:
        current = files.read(MANIFEST_NAME)
    except Missing:
        current = None
    if current is not None and not _parsed_joins(current):
        return None
    parts = []
    prefix = f"{files.location.prefix}/" if files.location.prefix else ""
    for name in files.client.list_folders(files.location.bucket, prefix):
        if name.startswith("."):
            continue
        try:
            parts.append((PurePosixPath(name), read_remote_manifest(RemoteFiles(files.location.url(name)))[0]))
        except FormatError:
            continue  # a sub-prefix without a manifest is not a job part
    if not parts:
        return None
    joined = join_manifests(url, parts)
    text = (json.dumps(joined.to_dict(), indent=2) + "\n").encode()
    if current != text:
        files.client.put_bytes(files.location.bucket, files.location.key(MANIFEST_NAME), text)
    return joined


def _parsed_joins(manifest: bytes) -> bool:
    try:
        return joins_parts(json.loads(manifest))
    except ValueError:
        return False
