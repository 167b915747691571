"""How a batch travels from a DataLoader worker to the training process: a shared-memory ring, slot numbers on the wire.

The ring (`Ring`) is allocated once, in the training process, before the workers start: for each
worker, `depth` slots of `slot_bytes` each (one shared-memory storage per slot, `share_memory_()`;
registered with `cudaHostRegister` when feeding CUDA, so copies from it are asynchronous), and one
shared int32 `stamps[worker, slot]` (0: free). Workers inherit it (fork) or receive it once when
they start (spawn: the storages' file descriptors travel with the pickled dataset).

A worker fills a batch as follows (`RingDataset.__getitems__`): take a free slot of its own row
(stamp it with the iteration's generation), gather the batch directly into views of that slot, and
send back a `SlotRef`: the slot number and, per tensor, (dtype, offset, shape, stride) — a few
hundred bytes, written to the pipe in one atomic write. When all its slots are taken (the user
keeps batches), the batch travels by value instead (`WireBatch`: arrays pickled through the pipe),
so keeping batches costs a copy, never a wait, never a corrupted batch.

The training process (`Ring.receive`) hands out fresh tensors viewing the slot (`torch.from_numpy` of numpy arrays over
the slot's memory, which the ring makes once per slot and view and keeps). **Lifetime rule**: a slot is given back to its
worker when nothing references its memory any more — no tensor of the batch, no view of one, no storage or numpy array
taken from one (each of them keeps one of the slot's arrays alive: the counts are back to the ring's own). So a batch,
or any tensor taken from it, stays valid for as long as the caller holds it;
holding many only makes the next ones travel by value. The check runs once per received batch.

Measured on 2 cores (16×2048, int64): the pickled transport cost 0.61–0.69 ms a batch in the main
process; PyTorch's own (a fresh shared-memory segment and fd per tensor per batch) 1.26–1.72 ms.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import torch
from sdl.loader.runtime.slots import copy_into, numpy_dtype, slot_arrays
from sdl.loader.runtime.wire import (  # noqa: F401 (re-export)
    SlotRef,
    WireBatch,
    as_tensor,
    encode,
    from_wire,
    to_wire,
)
from sdl.loader.sampling.batches import share_chunk

MAX_TASK_STEPS = 16  # batches per worker task (see RingDataset), at most: 8 measured ~20% more CPU a batch than 16
MAX_KEPT_VIEWS = 8  # arrays kept per ring slot, one per (field, offset, shape, stride) seen
RING_BYTES_PER_WORKER = 32 << 20  # what a worker's ring may hold, roughly: fewer steps per task for large batches


def task_steps(slot_bytes: int) -> int:
    """Batches per worker task for slots of `slot_bytes`: many, as each task costs the training process ~0.3 ms of
    DataLoader machinery however many batches it holds, but few enough that the ring (about three tasks per worker,
    see make_loader) stays within RING_BYTES_PER_WORKER: 16 for the bench's 0.5 MB batches, 2 for 5 MB ones."""
    return max(2, min(MAX_TASK_STEPS, RING_BYTES_PER_WORKER // (3 * max(1, slot_bytes))))


_SLOT_DTYPES: dict[str, tuple[np.dtype, torch.dtype | None]] = {}


def slot_dtypes(name: str) -> tuple[np.dtype, torch.dtype | None]:
    """For a torch dtype name: the numpy dtype to map a slot's memory as, and the torch dtype to view the tensor as
    afterwards (None: the same)."""
    found = _SLOT_DTYPES.get(name)
    if found is None:
        dtype = getattr(torch, name)
        as_numpy = numpy_dtype(torch.empty(0, dtype=dtype))
        found = _SLOT_DTYPES[name] = (as_numpy, None) if as_numpy is not None else (np.dtype(f"u{dtype.itemsize}"), dtype)
    return found


def shared_bytes(num_bytes: int) -> torch.Tensor:
    """A uint8 tensor in a fresh shared-memory segment of its own. `UntypedStorage._new_shared` creates it in place
    (52 half-MB slots: 8 ms); `empty().share_memory_()` allocates, then copies into the segment (87 ms)."""
    try:
        return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(num_bytes))
    except (AttributeError, RuntimeError):
        return torch.empty(num_bytes, dtype=torch.uint8).share_memory_()


class Ring:
    """Per-worker rings of shared-memory slots (see the module docstring); one per loader, shared with its workers."""

    def __init__(self, slot_bytes: int, num_workers: int, depth: int, pin: bool = False) -> None:
        self.slot_bytes, self.num_workers, self.depth = int(slot_bytes), num_workers, depth
        self.slots = [[shared_bytes(self.slot_bytes) for _ in range(depth)] for _ in range(num_workers)]
        self.stamps = torch.zeros((num_workers, depth), dtype=torch.int32).share_memory_()
        self._main_state(pin)

    def _main_state(self, pin: bool) -> None:
        self.generation, self._owner = 1, os.getpid()
        self._stamps = self.stamps.numpy()
        self._memory = [[slot.numpy() for slot in row] for row in self.slots]  # what handed-out batches view
        # Per slot, the arrays its batches' tensors are made from, by view (made once: 0.7 µs a tensor, not 2.3)
        self._arrays: list[list[dict[tuple, np.ndarray]]] = [[{} for _ in row] for row in self.slots]
        self._free_refs = [[self._refs(worker, slot) for slot in range(self.depth)] for worker in range(self.num_workers)]
        self._handed: set[tuple[int, int]] = set()
        self.pinned = pin and torch.cuda.is_available()
        if self.pinned:
            cudart = torch.cuda.cudart()
            for slot in (s for row in self.slots for s in row):
                code = cudart.cudaHostRegister(slot.data_ptr(), self.slot_bytes, 0)
                if int(code) != 0:
                    self.pinned = False  # the feed pins per batch instead
                    break

    # Worker side ---------------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"slot_bytes": self.slot_bytes, "num_workers": self.num_workers, "depth": self.depth,
                "slots": self.slots, "stamps": self.stamps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stamps = self.stamps.numpy()

    def acquire(self, worker: int, generation: int) -> int | None:
        """The lowest free slot of `worker`, now stamped with `generation`; None when every slot is still held. Lowest
        first, not round robin: a worker then writes only as many distinct slots as it has batches in flight, more of
        them still in the CPU's caches (16 × 2048 int64 batches, 2 workers, 3 alternated runs each: 257–338 against
        234–311 M tokens/s, workers' CPU a batch 65–85 against 75–95 µs; `sdl bench` could not tell them apart)."""
        row = self._stamps[worker]
        slot = int(row.argmin())  # stamps are >= 0: the first 0, if any
        if row[slot] != 0:
            return None
        row[slot] = generation
        return slot

    def slot(self, worker: int, slot: int) -> torch.Tensor:
        return self.slots[worker][slot]

    # Main side -----------------------------------------------------------------------------------------------------

    def new_generation(self) -> None:
        """Call before a new iteration starts its workers: batches dispatched from now on carry the new generation."""
        self.generation += 1

    def forget_stale(self) -> None:
        """Call once the new iteration has started: slots filled for an abandoned one (results drained or lost with
        their workers, never received) become free. Safe even if a worker still fills one: only it writes its row."""
        for worker, slot in zip(*np.nonzero((self._stamps > 0) & (self._stamps < self.generation))):
            if (int(worker), int(slot)) not in self._handed:
                self._stamps[worker, slot] = 0

    def receive(self, ref: SlotRef) -> dict[str, Any]:
        """The batch of `ref` as fresh tensors viewing its slot; slots no longer referenced are given back first."""
        self.release_unused()
        views = ref.views
        batch = {key: self._tensor(ref.worker, ref.slot, value) if key in views else as_tensor(value)
                 for key, value in ref.fields.items()}
        self._handed.add((ref.worker, ref.slot))
        return batch

    def release_unused(self) -> None:
        for worker, slot in list(self._handed):
            if self._refs(worker, slot) <= self._free_refs[worker][slot]:
                self._handed.discard((worker, slot))
                self._stamps[worker, slot] = 0

    def _refs(self, worker: int, slot: int) -> int:
        """References to the slot's memory beyond the ring's own: to its numpy memory, one per array made from it
        (the slot's kept arrays hold one each, counted in `_free_refs` as they are kept), and to each kept array, one
        per tensor made from it — every tensor handed out keeps its array alive (through its storage), with any view,
        storage or numpy array taken from that tensor."""
        arrays = self._arrays[worker][slot]
        return sys.getrefcount(self._memory[worker][slot]) - len(arrays) + sum(sys.getrefcount(a) - 3 for a in arrays.values())

    def _tensor(self, worker: int, slot: int, view: tuple) -> torch.Tensor:
        """A tensor over the slot's memory: `torch.from_numpy` of a numpy array on it, kept per view of the slot (no
        torch op, so the GIL stays with the caller: `as_strided` on the slot tensor measured ~1.6 µs alone but ~11 µs
        inside the loop); a dtype numpy has no name for (bfloat16) is mapped as unsigned integers of its size and viewed
        as itself."""
        dtype_name, offset, shape, stride = view
        dtype, view_as = slot_dtypes(dtype_name)
        arrays = self._arrays[worker][slot]
        array = arrays.get(view)
        if array is None:
            size = dtype.itemsize
            array = np.ndarray(shape, dtype, buffer=self._memory[worker][slot], offset=offset * size,
                               strides=tuple(step * size for step in stride))
            if len(arrays) < MAX_KEPT_VIEWS:  # a slot's views are its layout's fields, in a few batch sizes
                arrays[view] = array
        tensor = torch.from_numpy(array)
        return tensor if view_as is None else tensor.view(view_as)

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Unregister the slots from CUDA (in the process that registered them; a forked worker's copy never does)."""
        if getattr(self, "pinned", False) and getattr(self, "_owner", None) == os.getpid():
            cudart = torch.cuda.cudart()
            for slot in (s for row in self.slots for s in row):
                cudart.cudaHostUnregister(slot.data_ptr())
            self.pinned = False


class RingDataset:
    """The dataset a DataLoader's workers see: batches gathered into the worker's ring slots (`dataset.getitems_into`;
    for a dataset without it, its `__getitems__` batch copied into the slot by the worker, see `sdl.loader.runtime.slots`).

    Each task is (generation, [the sampler's batches]) from `TaskSampler`: `task_steps` consecutive steps, so the
    DataLoader's own per-message work (index queue, result queue, profiler hooks: ~80 µs in the training process)
    is paid once per task, not per batch. The result is a list, one SlotRef (or WireBatch) per batch."""

    def __init__(self, dataset: Any, ring: Ring, layout: dict[str, tuple[tuple[int, ...], Any]]) -> None:
        self.dataset, self.ring, self.layout = dataset, ring, layout
        self._arrays: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "ring": self.ring, "layout": self.layout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._arrays = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, task: tuple[int, list[Any]]) -> list[Any]:
        generation, batches = task
        share_chunk(batches)  # the task's steps located at once, as in the training process
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        return [self._one(worker, generation, indices) for indices in batches]

    def _one(self, worker: int, generation: int, indices: Any) -> Any:
        slot = self.ring.acquire(worker, generation)
        if slot is None:
            return to_wire(self.dataset.__getitems__(indices))
        arrays = self._arrays.get((worker, slot))
        if arrays is None:
            arrays = self._arrays[(worker, slot)] = slot_arrays(self.ring.slot(worker, slot), self.layout)
        if hasattr(self.dataset, "getitems_into"):  # gathered straight into the slot
            return encode(self.dataset.getitems_into(indices, arrays), self.ring, worker, slot, generation)
        return encode(copy_into(self.dataset.__getitems__(indices), arrays), self.ring, worker, slot, generation)


class TaskSampler:
    """The DataLoader's batch sampler for a ring: `steps` consecutive batches of `sampler` per task, with the ring's
    current generation."""

    def __init__(self, sampler: Any, ring: Ring, steps: int) -> None:
        self.sampler, self.ring, self.steps = sampler, ring, steps

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.steps)

    def __iter__(self):
        task: list[Any] = []
        for indices in self.sampler:
            task.append(indices)
            if len(task) == self.steps:
                yield self.ring.generation, task
                task = []
        if task:
            yield self.ring.generation, task
