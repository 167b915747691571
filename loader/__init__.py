"""sdl.loader: what training code imports (datasets, make_loader, LoaderState), and the tools around it.

Rooms by concept: format/, index/, sampling/, data/, runtime/, checkpoint/, bench/ (see README, "Layout").

The public names are imported lazily (PEP 562), so `import sdl.loader.errors` — which the CLI does at
start-up — does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SdlError": "sdl.loader.errors", "InputError": "sdl.loader.errors", "FormatError": "sdl.loader.errors",
    "IndexStaleError": "sdl.loader.errors", "CheckpointError": "sdl.loader.errors", "ConfigError": "sdl.loader.errors",
    "WorkerError": "sdl.loader.errors", "StorageError": "sdl.loader.errors",
    "Manifest": "sdl.loader.format.tokens", "ShardInfo": "sdl.loader.format.tokens", "read_manifest": "sdl.loader.format.tokens",
    "GlobalIndex": "sdl.loader.index.table", "SourceInfo": "sdl.loader.index.table", "open_index": "sdl.loader.index.cache",
    "build_index": "sdl.loader.index.cache",
    "Order": "sdl.loader.sampling.order",
    "LoaderState": "sdl.loader.sampling.state",
    "ElasticSampler": "sdl.loader.sampling.sampler",
    "merge_states": "sdl.loader.sampling.merge", "reshard_state": "sdl.loader.sampling.merge", "plan_for": "sdl.loader.sampling.merge",
    "TokenWindows": "sdl.loader.data.windows",
    "ZarrSamples": "sdl.loader.data.zarr_samples",
    "ArrowRows": "sdl.loader.data.arrow_rows",
    "Mixture": "sdl.loader.data.mixture",
    "DeviceFeed": "sdl.loader.runtime.feed",
    "make_loader": "sdl.loader.runtime.loader", "SdlLoader": "sdl.loader.runtime.loader", "keep_batch": "sdl.loader.runtime.loader",
    "load_checkpoint": "sdl.loader.checkpoint.safe_load", "find_states": "sdl.loader.checkpoint.find",
    "read_checkpoints": "sdl.loader.checkpoint.find", "rewrite_checkpoint": "sdl.loader.checkpoint.rewrite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sdl.loader' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
