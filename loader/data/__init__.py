"""sdl.loader.data: the datasets — TokenWindows over token shards, ZarrSamples, ArrowRows, Mixture — with batched gathers."""

from sdl.loader.data.arrow_rows import ArrowRows
from sdl.loader.data.documents import DocStarts
from sdl.loader.data.mixture import Mixture
from sdl.loader.data.samples import IndexedSamples
from sdl.loader.data.split import SPLITS, count_windows, split_range
from sdl.loader.data.windows import TokenWindows
from sdl.loader.data.zarr_samples import ZarrSamples

__all__ = ["SPLITS", "ArrowRows", "DocStarts", "IndexedSamples", "Mixture", "TokenWindows", "ZarrSamples", "count_windows", "split_range"]
