"""The layout of one ring slot: named arrays at aligned offsets; found from the dataset, or probed from one sample.

A dataset that gathers straight into a slot says its layout (`slot_layout(batch_size)`: TokenWindows, a Mixture
of them). For any other dataset (ZarrSamples, ArrowRows, other mixtures) the layout is probed from one sample: every
tensor field with a leading batch dimension gets a `[batch_size, *rest]` array, and the worker copies its batch
into the slot (`copy_into`) — one copy in the worker, none in the training process. A field whose shape or
dtype does not fit (variable-length, non-tensor) travels by value beside the slot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ALIGN = 64
Layout = dict[str, tuple[tuple[int, ...], Any]]


def probe_layout(dataset: Any, batch_size: int) -> Layout:
    """{field: ([batch_size, *trailing shape], dtype)} of the tensor fields of a one-sample batch of `dataset`."""
    if not hasattr(dataset, "__getitems__") or len(dataset) == 0:
        return {}
    layout: Layout = {}
    for name, value in dataset.__getitems__([0]).items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == 1 and value.device.type == "cpu":
            dtype = numpy_dtype(value)
            if dtype is not None:
                layout[name] = ((batch_size, *value.shape[1:]), dtype)
    return layout


def numpy_dtype(tensor: torch.Tensor) -> np.dtype | None:
    """The numpy dtype of a tensor's elements, or None for one numpy has no name for (bfloat16): such fields go by value."""
    try:
        return np.dtype(torch.empty(0, dtype=tensor.dtype).numpy().dtype)
    except TypeError:
        return None


def copy_into(batch: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """`batch` with each tensor that fits its slot array copied into it (the result's tensors view the slot)."""
    out = {}
    for name, value in batch.items():
        target = arrays.get(name)
        if (isinstance(value, torch.Tensor) and target is not None and value.device.type == "cpu" and value.dim() >= 1
                and value.shape[0] <= target.shape[0] and tuple(value.shape[1:]) == target.shape[1:]
                and numpy_dtype(value) == target.dtype):
            view = target[:value.shape[0]]
            view[...] = value.numpy()
            value = torch.from_numpy(view)
        out[name] = value
    return out


def slot_arrays(slot: torch.Tensor, layout: Layout) -> dict[str, np.ndarray]:
    """Numpy views of one slot (a uint8 tensor), one per field of `layout` ({name: (shape, dtype)}), each ALIGN-aligned."""
    memory = slot.numpy()
    arrays, offset = {}, 0
    for name, (shape, dtype) in layout.items():
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        arrays[name] = memory[offset:offset + size].view(dtype).reshape(shape)
        offset += -(-size // ALIGN) * ALIGN
    return arrays


def layout_bytes(layout: Layout) -> int:
    return sum(-(-int(np.prod(shape)) * np.dtype(dtype).itemsize // ALIGN) * ALIGN for shape, dtype in layout.values())
