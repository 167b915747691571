"""The error types of sdl: one root, `SdlError`, whose message says what was expected, what was found, and what to do."""

from __future__ import annotations


class SdlError(Exception):
    """Anything sdl refuses to do. The CLI prints `error: <message>` and exits 1."""


class InputError(SdlError):
    """A path, source file or argument given by the user is missing or unusable."""


class FormatError(SdlError):
    """A file on disk does not match the format it claims (manifest, shard, zarr, Arrow)."""


class IndexStaleError(SdlError):
    """A cached index no longer matches the files it describes."""


class CheckpointError(SdlError):
    """A checkpoint or loader state is unreadable, unsafe, or does not fit the dataset."""


class ConfigError(SdlError):
    """A configuration file or option is malformed."""


class WorkerError(SdlError):
    """A DataLoader worker died (killed, crashed) while the training process waited for its batches."""


class StorageError(SdlError):
    """An object store (S3 API) stayed unreachable, refused a request, or served an object that does not match."""


__all__ = ["SdlError", "InputError", "FormatError", "IndexStaleError", "CheckpointError", "ConfigError", "WorkerError",
           "StorageError"]
