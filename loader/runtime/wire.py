"""What crosses a DataLoader worker's pipe: a batch by reference to its ring slot (`SlotRef`), or by value (`WireBatch`).

A batch in a slot is sent as its slot number and, per tensor field, a plain (dtype name, storage offset in
elements, shape, stride) tuple — a few hundred bytes, pickled in C (a tuple subclass pickled ~4× slower). A batch
that found no free slot travels by value: its arrays pickled through the pipe.
"""

from __future__ import annotations

from typing import Any

import torch
from sdl.loader.data.batch import as_tensor


class WireBatch:
    """A batch in transit by value: its tensors as numpy arrays. Not a Mapping, so DataLoader pinning calls `pin_memory()`."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def to_tensors(self) -> dict[str, Any]:
        return {key: as_tensor(value) for key, value in self.fields.items()}

    def pin_memory(self, device: Any = None) -> dict[str, Any]:
        return {key: value.pin_memory() if isinstance(value, torch.Tensor) else value for key, value in self.to_tensors().items()}


class SlotRef:
    """A batch in transit by reference: worker, slot, generation, its fields, and the names of the fields that are
    tensors inside the slot (their value a plain (dtype name, storage offset in elements, shape, stride) tuple; plain
    tuples pickle ~4× faster than a tuple subclass), the others plain values."""

    __slots__ = ("fields", "generation", "slot", "views", "worker")

    def __init__(self, worker: int, slot: int, generation: int, fields: dict[str, Any], views: tuple[str, ...]) -> None:
        self.worker, self.slot, self.generation, self.fields, self.views = worker, slot, generation, fields, views

    def __reduce__(self):
        return SlotRef, (self.worker, self.slot, self.generation, self.fields, self.views)

    def pin_memory(self, device: Any = None) -> SlotRef:
        return self  # the ring is registered with CUDA once, when it is allocated


def to_wire(batch: Any) -> Any:
    """collate_fn for workers: a batch dict of tensors -> WireBatch of arrays (other batches pass unchanged)."""
    if not isinstance(batch, dict):
        return batch
    return WireBatch({key: value.numpy() if isinstance(value, torch.Tensor) and value.device.type == "cpu" else value
                      for key, value in batch.items()})


def encode(batch: dict[str, Any], ring: Any, worker: int, slot: int, generation: int) -> SlotRef:
    """The SlotRef of a batch: tensors inside the slot as descriptors, any other tensor (a field outside the slot's
    layout, e.g. `cu_seqlens`) by value as a numpy array, other values as they are."""
    base = ring.slot(worker, slot).data_ptr()
    fields: dict[str, Any] = {}
    views = []
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            start, itemsize = value.data_ptr() - base, value.element_size()
            if 0 <= start < ring.slot_bytes and not start % itemsize:
                value = (dtype_name(value.dtype), start // itemsize, tuple(value.shape), value.stride())
                views.append(key)
            elif value.device.type == "cpu":
                value = value.numpy()
        fields[key] = value
    return SlotRef(worker, slot, generation, fields, tuple(views))


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def dtype_name(dtype: torch.dtype) -> str:
    """"int64" for torch.int64 (`str(dtype)` costs ~0.4 µs a call, a dict lookup ~0.05)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name




def from_wire(batch: Any, ring: Any = None) -> Any:
    """A received batch as a dict of tensors: views of a ring slot, or zero-copy views of the received arrays."""
    if isinstance(batch, SlotRef):
        return ring.receive(batch)
    return batch.to_tensors() if isinstance(batch, WireBatch) else batch
