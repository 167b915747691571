"""sdl.loader.index: the global index over token shards, zarr stores and Arrow files; its cache and staleness.

Validation (`sdl.loader.index.validation`) and job joining (`sdl.loader.index.join`) are tools, not
part of the training path: import them by module.
"""

from sdl.loader.index.cache import (
    build_index,
    cache_path,
    current_fingerprint,
    current_sources,
    load_cached_index,
    open_index,
)
from sdl.loader.index.handles import OpenSources, group_by_source
from sdl.loader.index.kinds import LISTERS, SOURCE_STATS, detect_kind
from sdl.loader.index.table import (
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_VERSION,
    KINDS,
    GlobalIndex,
    SourceInfo,
    SourceTable,
    source_fingerprint,
    source_identity,
)
from sdl.loader.index.tokens import descriptor_of, file_stat, list_token_sources

__all__ = [
    "INDEX_FILE", "INDEX_FORMAT", "INDEX_VERSION", "KINDS", "LISTERS", "SOURCE_STATS", "GlobalIndex", "OpenSources",
    "SourceInfo", "SourceTable", "build_index", "cache_path", "current_fingerprint", "current_sources", "descriptor_of",
    "detect_kind", "file_stat", "group_by_source", "list_token_sources", "load_cached_index", "open_index",
    "source_fingerprint", "source_identity",
]
