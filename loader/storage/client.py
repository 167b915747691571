"""The S3 client: boto3, imported only when an `s3://` path is used, with one bounded retry loop for every request.

Endpoint, credentials, region and profile come from the standard AWS configuration that boto3 reads
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_PROFILE`,
`~/.aws/config`). The one sdl-specific setting is the storage timeout: `timeout_s` where the caller gives it
(`storage_timeout_s=` of the datasets), else `SDL_STORAGE_TIMEOUT_S` (seconds, a positive number), else 60 s.

botocore's own retries are off; this module classifies each failure once and acts on it:

- **no connection could be opened** (connection refused, host name not found): nothing listens there, and
  waiting rarely helps, so a few quick retries (UNREACHABLE_ATTEMPTS, about 2 s in all: a store restarting
  or a DNS blip) and then one StorageError naming the endpoint to fix;
- **transient** (connect or read timeouts, resets, truncated bodies, 5xx, throttling): jittered exponential
  backoff until `timeout_s` has passed since the request began, then one StorageError naming the timeout;
- **missing bucket** (404 NoSuchBucket) and **access denied** (403, bad keys or signature): at once, naming
  the bucket and key and what to do; a missing object (404 NoSuchKey) raises `Missing` at once;
- anything else the store refuses (4xx) at once; an exception that is not from the network or the store
  (a bug) is not caught, nor is a LocalWriteError: the local file a download writes failed (a full disk).

A request therefore never hangs: each attempt is itself bounded by the connect/read timeouts. boto3's
`upload_file` wraps the store's answer in S3UploadFailedError; the answer inside is what is classified.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from sdl.loader.errors import ConfigError, InputError, StorageError
from sdl.loader.storage.session import make_s3_client

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 60.0
TIMEOUT_ENV = "SDL_STORAGE_TIMEOUT_S"
UNREACHABLE_ATTEMPTS = 5  # backoff pauses of 0.1-0.2, 0.2-0.4, 0.4-0.8, 0.8-1.6 s between them: at most 3 s in all
MULTIPART_THRESHOLD = 64 << 20  # objects above this are uploaded in parts of this size, several at once
RETRYABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}  # a HEAD's 404 has no body: a missing bucket reads as a missing object
DENIED_CODES = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                "InvalidToken", "AllAccessDisabled"}


class Missing(StorageError):
    """The object does not exist (for a HEAD request: the object or its bucket)."""


class LocalWriteError(InputError):
    """The local file a download writes refused it (a full disk, a file-size limit): this machine, not the network, so
    it is raised at once, never retried; `os_error` is what the file system said."""

    def __init__(self, url: str, handle: BinaryIO, os_error: OSError) -> None:
        self.os_error = os_error
        super().__init__(f"{url}: cannot write it to {getattr(handle, 'name', 'a local file')} ({os_error_text(os_error)}); "
                         "free space there, or write it elsewhere")


def os_error_text(exc: OSError) -> str:
    """`ENOSPC: No space left on device`: the errno's name and what the system says of it."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{name}: {exc.strerror or exc}" if name else str(exc)


def default_timeout_s() -> float:
    """The storage timeout when the caller gives none: `SDL_STORAGE_TIMEOUT_S` if set, else DEFAULT_TIMEOUT_S."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds (such as 120); "
                          f"fix or unset it (unset: {DEFAULT_TIMEOUT_S:g} s)")
    return value


class S3Client:
    """One boto3 S3 client per process (made on first use, dropped when pickled), with bounded retries."""

    def __init__(self, timeout_s: float | None = None) -> None:
        timeout_s = default_timeout_s() if timeout_s is None else timeout_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise ConfigError(f"storage_timeout_s is {timeout_s!r}, expected a positive number of seconds")
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
            self._client, self._pid = make_s3_client(max(1.0, min(30.0, self.timeout_s))), os.getpid()
        return self._client

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def call(self, bucket: str, key: str, request: Callable[[], T]) -> T:
        """`request()` retried on transient failures for at most `timeout_s` (a few times within about 2 s when no
        connection can be opened); one clear StorageError after that, or at once when retrying cannot help."""
        url, began = f"s3://{bucket}/{key}" if key else f"s3://{bucket}", time.monotonic()
        attempt = unreachable = 0
        while True:
            try:
                return request()
            except Exception as exc:
                kind = classify(exc)
                if kind == "bug":
                    raise
                attempt += 1
                unreachable += kind == "unreachable"
                pause = min(2.0, 0.1 * 2 ** attempt) * (0.5 + random.random() / 2)
                if kind not in ("transient", "unreachable"):
                    raise refusal(kind, url, bucket, self.endpoint, exc) from None
                out_of_time = time.monotonic() + pause > began + self.timeout_s
                if kind == "unreachable" and (unreachable >= UNREACHABLE_ATTEMPTS or out_of_time):
                    raise StorageError(
                        f"{url}: no connection to the store at {self.endpoint} ({attempt} attempts in "
                        f"{time.monotonic() - began:.1f} s, last: {describe(exc)}); check that it is running and that "
                        "AWS_ENDPOINT_URL names its host and port") from None
                if out_of_time:
                    raise StorageError(
                        f"{url}: the store at {self.endpoint} did not answer for {self.timeout_s:g} s "
                        f"({attempt} attempts, last: {describe(exc)}); check that it is up and reachable "
                        f"(AWS_ENDPOINT_URL), or raise the storage timeout ({TIMEOUT_ENV}=<seconds> for sdl commands, "
                        "storage_timeout_s= in code)") from None
                time.sleep(pause)

    def require_bucket(self, bucket: str) -> None:
        """Fail at once, naming the bucket, when it does not exist or these credentials may not use it (one HEAD)."""
        try:
            self.call(bucket, "", lambda: self.client.head_bucket(Bucket=bucket))
        except Missing as exc:  # a HEAD's 404 has no error code to tell a bucket from an object: here it is the bucket
            raise refusal("no-bucket", f"s3://{bucket}", bucket, self.endpoint, exc) from None

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.call(bucket, key, lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def get_range(self, bucket: str, key: str, start: int, stop: int) -> tuple[bytes, dict[str, str]]:
        """Bytes [start, stop) of the object (fewer when it is shorter), and its user metadata (`x-amz-meta-*`)."""
        def request() -> tuple[bytes, dict[str, str]]:
            found = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")
            return found["Body"].read(), dict(found.get("Metadata") or {})

        return self.call(bucket, key, request)

    def download(self, bucket: str, key: str, handle: BinaryIO, on_chunk: Callable[[bytes], None] | None = None) -> int:
        """Stream the object into `handle` from its start (each attempt overwrites the last), cut it to the object's
        size, and return that. The handle is never shrunk mid-transfer: a cache reserves space by its file size."""
        def attempt() -> int:
            handle.seek(0)
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            size = 0
            for chunk in body.iter_chunks(1 << 20):
                try:
                    handle.write(chunk)
                except OSError as exc:  # the local disk (classify would take an OSError for the network)
                    raise LocalWriteError(f"s3://{bucket}/{key}", handle, exc) from None
                size += len(chunk)
            return size

        size = self.call(bucket, key, attempt)
        try:
            handle.truncate(size)
            if on_chunk is not None:  # hashed after the transfer, so a retried attempt is never hashed twice
                handle.flush()
                handle.seek(0)
                while chunk := handle.read(1 << 22):
                    on_chunk(chunk)
        except OSError as exc:
            raise LocalWriteError(f"s3://{bucket}/{key}", handle, exc) from None
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


def refusal(kind: str, url: str, bucket: str, endpoint: str, exc: BaseException) -> StorageError:
    """The error for an answer that retrying cannot change: a missing object or bucket, denied access, a bad request."""
    if kind == "missing":
        return Missing(f"{url}: no such object at {endpoint}; check the path (and that the dataset was written completely)")
    if kind == "no-bucket":
        return StorageError(f"{url}: the bucket {bucket!r} does not exist at {endpoint}; create it (aws s3 mb s3://{bucket}) "
                            "or correct the bucket name (and AWS_ENDPOINT_URL, if it points at another store)")
    if kind == "denied":
        return StorageError(f"{url}: the store at {endpoint} denied access ({describe(exc)}); check the credentials "
                            f"(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and that they may use bucket {bucket!r}")
    return StorageError(f"{url}: the store at {endpoint} refused the request ({describe(exc)}); check the credentials "
                        "and the bucket")


def answer(exc: BaseException) -> BaseException:
    """The store's own answer inside `exc`: boto3's upload_file wraps a ClientError in S3UploadFailedError."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    if isinstance(exc, S3UploadFailedError):
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, ClientError):
            return inner
    return exc


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def classify(exc: BaseException) -> str:
    """"missing", "no-bucket", "denied", "fatal" (other 4xx: a bad request), "unreachable" (no connection could be
    opened: retry briefly), "transient" (retry until the timeout) or "bug" (not from the network or the store)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        ParamValidationError,
    )

    exc = answer(exc)
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return "no-bucket"
        if code in MISSING_CODES:
            return "missing"
        if code in DENIED_CODES or status == 403:
            return "denied"
        return "transient" if code in RETRYABLE_CODES or status >= 500 else "fatal"
    if isinstance(exc, (NoCredentialsError, ParamValidationError)):
        return "fatal"
    if isinstance(exc, EndpointConnectionError):  # refused or unresolvable; a connect *timeout* is transient below
        return "unreachable"
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError
    from urllib3.exceptions import HTTPError

    if isinstance(exc, (BotoCoreError, HTTPError, OSError, S3UploadFailedError)):
        return "transient"  # connection reset, timeouts, truncated bodies: the network, not the request
    return "bug"


def describe(exc: BaseException) -> str:
    exc = answer(exc)
    code = error_code(exc)
    return f"{type(exc).__name__} {code}".strip() if code else f"{type(exc).__name__}: {str(exc)[:160]}"
