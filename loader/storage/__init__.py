"""sdl.loader.storage: datasets in object stores (`s3://bucket/prefix`): the client, locations, the bounded
order-aware node cache and its prefetcher. boto3 is imported only when an `s3://` path is used."""

from sdl.loader.storage.cache import CacheEntry, CacheStats, ShardCache
from sdl.loader.storage.cache_folder import tree_bytes
from sdl.loader.storage.client import DEFAULT_TIMEOUT_S, S3Client
from sdl.loader.storage.location import S3Location, is_remote, local_or_remote
from sdl.loader.storage.prefetch import Prefetcher
from sdl.loader.storage.remote import (
    DEFAULT_PREFETCH_STEPS,
    RemoteFiles,
    StoredObject,
    default_cache_dir,
    remote_files,
    shard_bound,
)

__all__ = [
    "DEFAULT_PREFETCH_STEPS", "DEFAULT_TIMEOUT_S", "CacheEntry", "CacheStats", "Prefetcher", "RemoteFiles", "S3Client",
    "S3Location", "ShardCache", "StoredObject", "default_cache_dir", "is_remote", "local_or_remote", "remote_files", "shard_bound",
    "tree_bytes",
]
