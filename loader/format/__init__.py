"""sdl.loader.format: the token dataset format (manifest + `.npy` shards) and whole-or-nothing file writes.

The only part of `sdl.loader` that `sdl.prepare` imports (with `sdl.loader.errors`).
"""

from sdl.loader.format.atomic import (
                                      atomic_write,
                                      atomic_write_bytes,
                                      atomic_write_json,
                                      remove_stale_temporaries,
)
from sdl.loader.format.tokens import (
                                      CACHE_DIR,
                                      MANIFEST_NAME,
                                      Manifest,
                                      ShardInfo,
                                      docs_name,
                                      dtype_for_vocab,
                                      file_checksum,
                                      npy_bytes,
                                      open_shard,
                                      parse_manifest,
                                      read_manifest,
                                      read_npy_header,
                                      repair_hint,
                                      shard_name,
)

__all__ = [
    "CACHE_DIR", "MANIFEST_NAME", "Manifest", "ShardInfo", "atomic_write", "atomic_write_bytes", "atomic_write_json",
    "docs_name", "dtype_for_vocab", "repair_hint", "file_checksum", "npy_bytes", "open_shard", "parse_manifest", "read_manifest",
    "read_npy_header",
    "remove_stale_temporaries", "shard_name",
]
