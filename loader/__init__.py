"""sdl.loader: formats, the global index, the elastic order and sampler, loader state, datasets, device feed.

The public names are imported lazily (PEP 562), so `import sdl.loader.errors` — which the CLI does at
start-up — does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SdlError": "sdl.loader.errors", "InputError": "sdl.loader.errors", "FormatError": "sdl.loader.errors",
    "IndexStaleError": "sdl.loader.errors", "CheckpointError": "sdl.loader.errors", "ConfigError": "sdl.loader.errors",
    "Manifest": "sdl.loader.format", "ShardInfo": "sdl.loader.format", "read_manifest": "sdl.loader.format",
    "GlobalIndex": "sdl.loader.index", "SourceInfo": "sdl.loader.index", "open_index": "sdl.loader.index",
    "build_index": "sdl.loader.index",
    "Order": "sdl.loader.order",
    "LoaderState": "sdl.loader.state",
    "ElasticSampler": "sdl.loader.sampler",
    "TokenWindows": "sdl.loader.windows",
    "ZarrSamples": "sdl.loader.zarr_samples",
    "ArrowRows": "sdl.loader.arrow_rows",
    "DeviceFeed": "sdl.loader.feed",
    "make_loader": "sdl.loader.loader", "SdlLoader": "sdl.loader.loader", "keep_batch": "sdl.loader.loader",
    "merge_states": "sdl.loader.reshard", "reshard_state": "sdl.loader.reshard", "plan_for": "sdl.loader.reshard",
    "load_checkpoint": "sdl.loader.checkpoint", "find_states": "sdl.loader.checkpoint",
    "read_checkpoints": "sdl.loader.checkpoint", "rewrite_checkpoint": "sdl.loader.checkpoint",
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
