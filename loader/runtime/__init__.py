"""sdl.loader.runtime: what runs while training — make_loader/SdlLoader, the worker transport, the device feed."""

from sdl.loader.runtime.feed import DeviceFeed, resolve_device, to_device
from sdl.loader.runtime.loader import (
    SdlLoader,
    keep_batch,
    make_loader,
    resolve_topology,
)

__all__ = ["DeviceFeed", "SdlLoader", "keep_batch", "make_loader", "resolve_device", "resolve_topology", "to_device"]
