"""Dataset locations: a local folder or `s3://bucket/prefix`, and the object keys that mirror the local layout.

A token dataset at `s3://bucket/prefix` is the local layout under the prefix, key for file:
`prefix/manifest.json`, `prefix/shard-000000.npy`, `prefix/job-00000/shard-000000.npy`, … so any S3
tool (`aws s3 sync`, `rclone`) copies a dataset in or out unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdl.loader.errors import InputError

SCHEME = "s3://"


def is_remote(path: object) -> bool:
    """Whether `path` names an object-store location (`s3://…`) rather than a local path."""
    return isinstance(path, str) and path.startswith(SCHEME)


@dataclass(frozen=True, kw_only=True, slots=True)
class S3Location:
    """`s3://bucket/prefix`: a dataset's folder in a bucket (prefix without a trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise InputError(f"bucket {self.bucket!r}: expected a bucket name, as in s3://bucket/prefix")
        if self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise InputError(f"prefix {self.prefix!r}: expected no leading or trailing '/'")

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not is_remote(url):
            raise InputError(f"{url!r}: expected an object-store location s3://bucket/prefix")
        bucket, _, prefix = url[len(SCHEME):].partition("/")
        if not bucket:
            raise InputError(f"{url!r}: no bucket; expected s3://bucket/prefix")
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    def key(self, relative: str) -> str:
        """The object key of `relative` (a path inside the dataset, '/'-separated)."""
        relative = relative.strip("/")
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def child(self, relative: str) -> S3Location:
        return S3Location(bucket=self.bucket, prefix=self.key(relative))

    def url(self, relative: str = "") -> str:
        key = self.key(relative) if relative else self.prefix
        return f"{SCHEME}{self.bucket}/{key}" if key else f"{SCHEME}{self.bucket}"

    def __str__(self) -> str:
        return self.url()


def local_or_remote(path: str | Path) -> Path | S3Location:
    """The one rule that tells the two kinds of dataset path apart: S3Location for `s3://…`, else a Path."""
    return S3Location.parse(path) if is_remote(path) else Path(path)
