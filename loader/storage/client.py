"""The S3 client: boto3, imported only when an `s3://` path is used, with one bounded retry loop for every request.

Endpoint, credentials, region and profile come from the standard AWS configuration that boto3 reads
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_PROFILE`,
`~/.aws/config`): nothing sdl-specific. botocore's own retries are off; this module retries transient
failures (connection refused or reset, timeouts, 5xx, throttling) with jittered exponential backoff until
`timeout_s` has passed since the request began, then raises one StorageError naming `bucket/key` and the
endpoint. A request therefore never hangs: each attempt is itself bounded by the connect/read timeouts.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from sdl.loader.errors import StorageError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 60.0
MULTIPART_THRESHOLD = 64 << 20  # objects above this are uploaded in parts of this size, several at once
RETRYABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class Missing(StorageError):
    """The object (or its bucket) does not exist."""


class S3Client:
    """One boto3 S3 client per process (made on first use, dropped when pickled), with bounded retries."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise StorageError(f"storage timeout is {timeout_s!r} s, expected a positive number of seconds")
        self.timeout_s = float(timeout_s)
        self._client: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["timeout_s"])

    @property
    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():  # boto3 clients must not cross a fork
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise StorageError("s3:// paths need boto3, which is not installed; pip install 'streaming-dataloader[s3]'") from None

            attempt_s = max(1.0, min(30.0, self.timeout_s))
            config = Config(connect_timeout=attempt_s, read_timeout=attempt_s, retries={"total_max_attempts": 1},
                            max_pool_connections=32)
            self._client, self._pid = boto3.session.Session().client("s3", config=config), os.getpid()
        return self._client

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def call(self, bucket: str, key: str, request: Callable[[], T]) -> T:
        """`request()` retried on transient failures for at most `timeout_s`; a clear StorageError after that."""
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                return request()
            except Exception as exc:  # noqa: BLE001 - classified right below
                kind = classify(exc)
                if kind == "bug":
                    raise
                if kind == "missing":
                    raise Missing(f"s3://{bucket}/{key}: no such object at {self.endpoint}; check the path "
                                  "(and that the dataset was written completely)") from None
                if kind == "fatal":
                    raise StorageError(f"s3://{bucket}/{key}: the store at {self.endpoint} refused the request "
                                       f"({describe(exc)}); check the credentials and the bucket") from None
                attempt += 1
                pause = min(2.0, 0.1 * 2 ** attempt) * (0.5 + random.random() / 2)
                if time.monotonic() + pause > deadline:
                    raise StorageError(
                        f"s3://{bucket}/{key}: the store at {self.endpoint} did not answer for {self.timeout_s:g} s "
                        f"({attempt} attempts, last: {describe(exc)}); check that it is up and reachable "
                        "(AWS_ENDPOINT_URL), or raise the storage timeout") from None
                time.sleep(pause)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.call(bucket, key, lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def get_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the object (fewer when it is shorter)."""
        return self.call(bucket, key, lambda: self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")["Body"].read())

    def download(self, bucket: str, key: str, handle: BinaryIO, on_chunk: Callable[[bytes], None] | None = None) -> int:
        """Stream the object into `handle` from its start (each attempt overwrites the last), cut it to the object's
        size, and return that. The handle is never shrunk mid-transfer: a cache reserves space by its file size."""
        def attempt() -> int:
            handle.seek(0)
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            size = 0
            for chunk in body.iter_chunks(1 << 20):
                handle.write(chunk)
                size += len(chunk)
            return size

        size = self.call(bucket, key, attempt)
        handle.truncate(size)
        if on_chunk is not None:  # hashed after the transfer, so a retried attempt is never hashed twice
            handle.flush()
            handle.seek(0)
            while chunk := handle.read(1 << 22):
                on_chunk(chunk)
        return size

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """{"size", "metadata"} of the object, or None when it does not exist."""
        try:
            found = self.call(bucket, key, lambda: self.client.head_object(Bucket=bucket, Key=key))
        except Missing:
            return None
        return {"size": int(found["ContentLength"]), "metadata": dict(found.get("Metadata") or {})}

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self.call(bucket, key, lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data))

    def upload_file(self, path: str | os.PathLike, bucket: str, key: str, metadata: dict[str, str] | None = None) -> None:
        """Upload a local file; multipart (parts in parallel) above MULTIPART_THRESHOLD. The object appears whole."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)
        extra = {"Metadata": metadata} if metadata else None
        self.call(bucket, key, lambda: self.client.upload_file(str(path), bucket, key, Config=config, ExtraArgs=extra))

    def list_folders(self, bucket: str, prefix: str) -> list[str]:
        """The names of the "folders" (common prefixes) directly under `prefix` (tools only; training never lists)."""
        def request() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            return [p["Prefix"][len(prefix):].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]

        return self.call(bucket, prefix, request)

    def list_objects(self, bucket: str, prefix: str) -> list[tuple[str, int, str]]:
        """(key, size, ETag) of every object whose key starts with `prefix`, in key order (1,000 per request)."""
        def request() -> list[tuple[str, int, str]]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [(o["Key"], int(o["Size"]), str(o.get("ETag", "")).strip('"')) for page in pages for o in page.get("Contents", [])]

        return self.call(bucket, prefix, request)

    def delete(self, bucket: str, key: str) -> None:
        self.call(bucket, key, lambda: self.client.delete_object(Bucket=bucket, Key=key))


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def classify(exc: BaseException) -> str:
    """"missing", "fatal" (4xx: credentials, permissions, bad request) or "transient" (retry)."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        ParamValidationError,
    )

    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in MISSING_CODES or code == "NoSuchBucket":
            return "missing"
        status = int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return "transient" if code in RETRYABLE_CODES or status >= 500 else "fatal"
    if isinstance(exc, (NoCredentialsError, ParamValidationError)):
        return "fatal"
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError
    from urllib3.exceptions import HTTPError

    if isinstance(exc, (BotoCoreError, HTTPError, OSError, S3UploadFailedError)):
        return "transient"  # connection refused/reset, timeouts, truncated bodies: the network, not the request
    return "bug"


def describe(exc: BaseException) -> str:
    code = error_code(exc)
    return f"{type(exc).__name__} {code}".strip() if code else f"{type(exc).__name__}: {str(exc)[:160]}"
