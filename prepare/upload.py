"""`sdl prepare … s3://bucket/prefix`: prepare into a local staging folder, upload each file once it is finished,
the manifest last, so a reader never sees half a dataset.

The staging folder (`$XDG_CACHE_HOME/sdl/staging/<hash of the URL>`) is an ordinary local output: the
journal there makes a killed run resume like a local one, and since a resumed run writes the same bytes,
the objects end byte-identical to an uninterrupted run's. Each object carries its sha256 as metadata
(`x-amz-meta-sha256`), so a resumed upload skips what the store already holds. Keys mirror the local
layout (`prefix/manifest.json`, `prefix/shard-000000.npy`, `prefix/.sdl/prepare-journal.json`, …). The
staging folder is removed once the manifest is in the store; then shard objects of the dataset's folders that its
manifest does not list (an older, larger dataset's, replaced with `--overwrite`) are deleted, so that the prefix
holds what a local run's folder would. A re-run of a finished upload fetches the
journal back and answers "already complete" (or refuses other arguments) as a local re-run does. An upload
that fails keeps the staging folder by design (a re-run resumes from it) and its error says where it is.
The bucket is checked before any tokenizing: a missing bucket or denied access fails at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdl.loader.errors import StorageError
from sdl.loader.format.shard_files import unlisted_shards
from sdl.loader.format.tokens import CACHE_DIR, MANIFEST_NAME, read_manifest
from sdl.loader.storage.client import S3Client
from sdl.loader.storage.location import S3Location
from sdl.loader.storage.remote import default_cache_dir

JOURNAL_FILES = (f"{CACHE_DIR}/prepare-journal.json", f"{CACHE_DIR}/prepare-shards.jsonl")
POLL_S = 0.2


def staging_dir(url: str) -> Path:
    return default_cache_dir().parent / "staging" / hashlib.sha256(url.encode()).hexdigest()[:16]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class Uploader:
    """Uploads the finished shard files of a staging folder (a thread polls it), each file once; `finish` puts the rest,
    the journal files, then the manifest. A file is known by its name and its inode, size and times: a shard file of
    the same name written again (a killed run's leftover, replaced by the run that resumes or overwrites it) is a
    new file and is put again."""

    def __init__(self, client: S3Client, location: S3Location, staging: Path) -> None:
        self.client, self.location, self.staging = client, location, staging
        self.done: dict[str, tuple[int, ...]] = {}   # name -> identity of the file uploaded under it
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdl-upload", daemon=True)

    def start(self) -> Uploader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(POLL_S):
                self.upload_finished_shards()
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish() in the main thread
            self.error = exc

    def upload_finished_shards(self) -> None:
        """Shards and docs files present under their final names (atomic renames: whole) and not yet uploaded."""
        for path in sorted(self.staging.glob("shard-*.npy")):
            try:
                if self.done.get(path.name) != _identity(os.stat(path)):
                    self.put(path.name)
            except FileNotFoundError:
                continue  # removed by a resuming run since it was listed; rewritten, then seen again

    def put(self, relative: str) -> None:
        """Upload one file unless the store already holds the same bytes (a resumed run)."""
        path, key = self.staging / relative, self.location.key(relative)
        try:
            identity = _identity(os.stat(path))  # before reading: a file replaced after this is put again
            digest = sha256_of(path)
        except FileNotFoundError:
            return  # removed by a resuming run (written after its last journal entry); rewritten, then seen again
        found = self.client.head(self.location.bucket, key)
        if found is None or found["metadata"].get("sha256") != digest:
            self.client.upload_file(path, self.location.bucket, key, metadata={"sha256": digest})
        self.done[relative] = identity

    def finish(self) -> None:
        self.stop()
        if self.error is not None:
            raise self.error
        self.upload_finished_shards()
        for relative in (*JOURNAL_FILES, MANIFEST_NAME):  # the manifest last: the dataset exists from here on
            if (self.staging / relative).is_file():
                self.put(relative)


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """What tells a file from another written under its name (each write is a new file: a temporary name, then a rename)."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def fetch_finished_journal(client: S3Client, location: S3Location, staging: Path) -> bool:
    """Bring back the journal (and manifest) of a dataset already in the store, so the local run can say
    "already complete" — or refuse different arguments — without tokenizing again. They are fetched into a side
    folder that becomes `staging` by one rename once every file is whole: a fetch killed midway leaves no staging
    folder (which a later run would take for an interrupted one, and whose cut manifest it would upload). Whether
    anything was fetched."""
    if client.head(location.bucket, location.key(MANIFEST_NAME)) is None:
        return False
    fetching = staging.with_name(staging.name + ".fetching")
    shutil.rmtree(fetching, ignore_errors=True)  # what a killed fetch left: never read
    for relative in (*JOURNAL_FILES, MANIFEST_NAME):
        if client.head(location.bucket, location.key(relative)) is not None:
            (fetching / relative).parent.mkdir(parents=True, exist_ok=True)
            with open(fetching / relative, "wb") as handle:
                client.download(location.bucket, location.key(relative), handle)
                handle.flush()
                os.fsync(handle.fileno())
    if not fetching.is_dir():
        return False
    os.replace(fetching, staging)
    return True


def remove_unlisted(client: S3Client, location: S3Location, staging: Path) -> None:
    """Delete the shard objects in the dataset's folders (the prefix, its part folders) that the manifest uploaded from
    `staging` does not list: what an older dataset left there. Run after the manifest is up, so a reader never misses one."""
    base = location.key("")
    present = [key[len(base):] for key, _, _ in client.list_objects(location.bucket, base)]
    for name in unlisted_shards(read_manifest(staging), present):
        client.delete(location.bucket, location.key(name))


def prepare_to_store(config: Any, run_local: Callable[[Any], Any]) -> Any:
    """Run `run_local(config with out=<staging>)` while uploading its shards to `config.out` (s3://…); the report."""
    location, client = S3Location.parse(config.out), S3Client()
    staging = staging_dir(config.out)
    client.require_bucket(location.bucket)
    interrupted = staging.exists()  # a run was killed here: the store holds part of the dataset, never its manifest
    fetched = False
    if getattr(config, "overwrite", False):  # the old dataset ends before any of its shards is replaced: a run killed
        client.delete(location.bucket, location.key(MANIFEST_NAME))  # midway leaves no manifest over a mix of shards
    elif not interrupted:
        fetched = fetch_finished_journal(client, location, staging)
    uploader = Uploader(client, location, staging).start()
    try:
        report = run_local(replace(config, out=str(staging)))
    except BaseException:
        uploader.stop()
        if fetched:  # the finished dataset's journal, fetched to compare (a refusal): not a run to resume
            shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        uploader.finish()
        remove_unlisted(client, location, staging)
    except StorageError as exc:
        raise StorageError(f"{exc}; the prepared files stay in {staging}: run the same sdl prepare command again to "
                           "resume the upload, or delete that folder to start over") from None
    shutil.rmtree(staging, ignore_errors=True)
    if interrupted:  # killed after tokenizing but before the manifest was uploaded: the store's copy was resumed
        report = replace(report, status="complete", resumed=True)
    return replace(report, out=config.out)
