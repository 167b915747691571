"""make_loader: PyTorch's DataLoader over an ElasticSampler, with a cursor that moves only when a batch is handed over.

The DataLoader's workers prefetch (`prefetch_factor` batches each) and the device feed copies one
batch ahead, so the sampler is always ahead of the training loop. The state therefore counts the
batches *yielded to the caller*: `state_dict()` after k batches is the sampler's start state
advanced by k global steps — prefetched batches are neither lost nor repeated on resume.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from sdl.loader.errors import CheckpointError, ConfigError, SdlError
from sdl.loader.runtime.feed import DeviceFeed, resolve_device
from sdl.loader.runtime.host_resume import unrestored_resume
from sdl.loader.runtime.slots import layout_bytes, probe_layout
from sdl.loader.runtime.topology import check_topology, find_topology, resolve_topology  # noqa: F401 (re-export)
from sdl.loader.runtime.transport import (
    Ring,
    RingDataset,
    TaskSampler,
    from_wire,
    task_steps,
    to_wire,
)
from sdl.loader.runtime.workers import (
    WorkerInit,
    check_workers,
    leaf_sources,
    worker_error,
)
from sdl.loader.sampling.sampler import ElasticSampler, EpochPlan, move_to_epoch
from sdl.loader.sampling.state import LoaderState, check_arguments
from sdl.loader.storage.prefetch import NamedObjects, Prefetcher
from torch.utils.data import DataLoader


def auto_device(device: Any) -> torch.device:
    """"auto": the current CUDA device when there is one (set it per rank, e.g. from LOCAL_RANK), else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return resolve_device(device)


def keep_batch(batch: Any) -> Any:
    """collate_fn for a DataLoader over sdl datasets: `__getitems__` already returns a collated batch."""
    return batch


class SdlLoader:
    """An iterable over the rest of the current epoch's batches for this rank; checkpointable."""

    def __init__(self, dataset: Any, sampler: ElasticSampler, dataloader: DataLoader, device: Any, ring: Ring | None = None,
                 topology_source: str = "the rank= and world_size= arguments") -> None:
        self.dataset, self.sampler, self.dataloader, self.device = dataset, sampler, dataloader, device
        self.ring = ring  # the workers' shared-memory slots (sdl.loader.runtime.transport), when the dataset fills them
        self._workers: Any = None  # the DataLoader iterator whose workers the current iteration reads
        self.topology_source = topology_source
        self._start = sampler.state(0)  # the state the current (or next) iteration starts from
        self._yielded = 0  # batches of that iteration handed to the caller
        self._restored = False  # given a state (load_state_dict): a host resuming mid-epoch without one is refused
        # A host's `loader.sampler.set_epoch(e)` moves the loader (Lightning); weakly: a cycle would outlive `del loader`,
        # and its workers with it until a garbage collection, whose shutdown of them then waits out their timeouts
        sampler.owner_set_epoch = weakref.WeakMethod(self.set_epoch)

    @property
    def _state(self) -> LoaderState:
        """The state after the batches handed over so far (computed on demand, not per batch)."""
        return self.sampler.state_after(self._start, self._yielded)

    @property
    def batch_sampler(self) -> ElasticSampler:
        """The sampler, which makes whole batches (read by hosts that inspect a DataLoader, e.g. Lightning's checks)."""
        return self.sampler

    def __len__(self) -> int:
        """Batches one whole epoch yields on this rank (micro-batches when accumulating), wherever the cursor stands."""
        return len(self.sampler)

    def plan(self) -> EpochPlan:
        """Steps, samples and the dropped/padded tail of the rest of the current epoch."""
        state = self._state
        plan = self.sampler.plan_from(state)
        if hasattr(self.dataset, "source_plan"):  # a Mixture: per-source draws and passes
            plan = replace(plan, sources=self.dataset.source_plan(state))
        return plan

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per global (optimizer) step: global_batch_size / (world_size × batch_size)."""
        return self.sampler.accumulation_steps

    def __iter__(self) -> Iterator[Any]:
        check_topology(self.sampler.rank, self.sampler.world_size, self.topology_source)
        if not self._restored and (message := unrestored_resume(self)) is not None:
            raise CheckpointError(message)
        self._start, self._yielded = self._state, 0
        self.sampler.load_state_dict(self._start)

        prefetcher = self._prefetcher()

        def handed_over(_batch: Any) -> None:
            self._yielded += 1
            if prefetcher is not None:
                prefetcher.advance()

        # Batches pickled through the workers' pipes are received by a thread while the caller computes; ring slots
        # (a few hundred bytes each) are received on the caller's thread, where the DataLoader's SIGCHLD handler works.
        background = self.dataloader.num_workers > 0 and self.ring is None
        try:
            yield from DeviceFeed(self._host_batches(), self.device, on_yield=handed_over, background=background,
                                  health=self._check_workers if background else None)
        except RuntimeError:  # PyTorch's SIGCHLD handler ("worker killed by signal") fires wherever the thread is
            if self._workers is not None:
                self._check_workers()
            raise
        finally:
            if prefetcher is not None:
                prefetcher.close()
        self._start, self._yielded = self._state, 0  # every step handed over: the state is the next epoch's start

    def _prefetcher(self) -> Prefetcher | None:
        """For a dataset in an object store: a thread fetching what this rank's next steps read, from the computed
        order (a copy of the sampler, started where this iteration starts), into the node cache."""
        remote = getattr(self.dataset, "remote", None)
        if remote is None:
            return None
        ahead = copy.copy(self.sampler)
        ahead.load_state_dict(self._start)
        if hasattr(self.dataset, "needs_of"):  # TokenWindows: the shards of many steps in one vectorised call
            needs_of, entry_of = self.dataset.needs_of, self.dataset.cache_entry
            heads = self.dataset.fetch_head if self.dataloader.num_workers == 0 else None  # read where the loop reads
            num_objects = len(self.dataset.index.sources)  # its shards: a warm, unlimited cache leaves nothing to fetch
        else:  # ArrowRows, ZarrSamples: the cache entries of each step
            named = NamedObjects(self.dataset.entries_for)
            needs_of, entry_of, heads, num_objects = named.needs_of, named.entry_of, None, None
        needs = map(needs_of, ahead.id_chunks())
        prefetcher = Prefetcher(remote.cache, needs, entry_of, remote.prefetch_steps, fetch_head=heads, num_objects=num_objects)
        return None if prefetcher.start().idle else prefetcher  # idle: a warm cache, nothing to fetch

    def _host_batches(self) -> Any:
        """The DataLoader when it has workers; without, the dataset called directly: the single-process DataLoader
        adds only its per-batch hooks (measured ~40 µs of a ~150 µs 16×2048 batch) and pinning, which the feed does."""
        if self.dataloader.num_workers == 0:
            return (self.dataset.__getitems__(batch) for batch in self.sampler)
        if self.ring is not None:
            if self._workers is not None and not self.dataloader.persistent_workers:
                self._workers._shutdown_workers()  # before new workers reuse the ring rows of the old ones
            self.ring.new_generation()
        self.dataloader.worker_init_fn = WorkerInit()  # this process, this thread: see runtime.workers
        self._workers = iter(self.dataloader)
        if self.ring is not None:
            self.ring.forget_stale()
        return self._received(self._workers)

    def _received(self, batches: Any) -> Iterator[Any]:
        try:
            for received in batches:
                if self.ring is None:
                    yield from_wire(received)
                    continue
                for batch in received:  # a task: task_steps(...) batches
                    yield from_wire(batch, self.ring)
        except RuntimeError:  # PyTorch's "worker killed by signal": say which worker, and name a truncated file
            self._check_workers()
            raise
        except SdlError as exc:  # raised in a worker: its own one-line message (the worker's traceback as the cause)
            unwrapped = worker_error(exc)
            if unwrapped is None:
                raise
            self._drop_workers()  # the next iteration starts afresh: no worker of this one left to die later
            raise unwrapped from exc

    def _check_workers(self) -> None:
        """Raise if a worker died (called by the feed whenever it has waited a while, and on PyTorch's own error)."""
        try:
            check_workers(self._workers, self.dataset)
        except BaseException:
            self._drop_workers()
            raise

    def _drop_workers(self) -> None:
        """Shut this iteration's workers down (the survivors of a failure); a fresh iteration starts new ones."""
        self._workers._shutdown_workers()
        self.dataloader._iterator = None

    def state_dict(self) -> dict[str, Any]:
        """The state after the last batch handed to the caller (JSON-able; weights_only-safe)."""
        return self._state.to_dict()

    def load_state_dict(self, state: dict[str, Any] | LoaderState) -> None:
        self.sampler.load_state_dict(state)
        self._start, self._yielded, self._restored = self.sampler.state(0), 0, True

    def set_epoch(self, epoch: int, skip_rest: bool = False) -> None:
        """Continue `epoch` when it is the one in progress; start it when the current epoch has not begun (or is
        over). Another epoch while the current one is part-way raises ConfigError unless `skip_rest=True`."""
        state = self._state
        self.sampler.load_state_dict(move_to_epoch(state, epoch, skip_rest, self.sampler.plan_from(state).steps))
        self._start, self._yielded = self.sampler.state(0), 0

    @property
    def epoch(self) -> int:
        return self._state.epoch


def check_loader_options(dataset: Any, num_workers: Any, prefetch_factor: Any, pin_memory: Any, persistent_workers: Any) -> None:
    """Refuse what DataLoader would reject with its own error, or silently replace: naming the argument."""
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitems__"):
        raise ConfigError(f"dataset is {type(dataset).__name__}, expected an sdl dataset (TokenWindows, ZarrSamples, ArrowRows, "
                          "Mixture) or any dataset with __len__ and __getitems__ (a batch of ids -> a dict of tensors)")
    check_arguments(num_workers=num_workers)
    if prefetch_factor is not None and (isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, int) or prefetch_factor < 1):
        raise ConfigError(f"prefetch_factor={prefetch_factor!r}: expected None (the default, 4) or an integer >= 1")
    for name, value in (("pin_memory", pin_memory), ("persistent_workers", persistent_workers)):
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected None (the default) or True or False")


def warn_reopening(dataset: Any, shuffle: Any) -> None:
    """Warn when a global shuffle (a mixture's sources always draw one) reads a TokenWindows of more shards than its
    `max_open_shards`: nearly every batch would reopen shards (400 shards under an LRU of 64: ~50x slower)."""
    global_order = shuffle is True or shuffle == "global"
    for name, source in leaf_sources(dataset):
        shards, max_open = len(getattr(getattr(source, "index", None), "sources", ())), getattr(source, "max_open_shards", None)
        if max_open is not None and shards > max_open and (global_order or name is not None):
            where = f"mixture source {name!r} ({source.path})" if name is not None else source.path
            fix = f"pass max_open_shards={shards} to TokenWindows (and raise ulimit -n if needed)"
            if getattr(source, "remote", None) is not None:
                fix += " and a node cache that holds every shard (a map of an evicted cache file keeps its disk space)"
            if name is None:
                fix += ", or shuffle='locality'"
            warnings.warn(f"{where} has {shards:,} shards, more than max_open_shards={max_open:,}: a global shuffle reopens "
                          f"shards on nearly every batch (tens of times slower); {fix}", RuntimeWarning, stacklevel=3)


def make_loader(dataset: Any, batch_size: int, *, seed: int = 0, shuffle: bool | str = True, num_workers: int = 2,
                rank: int | None = None, world_size: int | None = None, device: Any = "auto", drop_last: bool = True,
                prefetch_factor: int | None = None, pin_memory: bool | None = None, persistent_workers: bool | None = None,
                block_size: int = 1024, window_blocks: int = 16, multiprocessing_context: Any = None,
                global_batch_size: int | None = None) -> SdlLoader:
    """A resumable, elastic loader over `dataset` (TokenWindows, ZarrSamples, ArrowRows, or any dataset with
    `__len__`, `__getitems__` returning a batch dict, and an `identity` string). `global_batch_size=G` (a multiple of
    world_size × batch_size): each global step is G/(W·B) micro-batches, the same global batches on any topology."""
    check_loader_options(dataset, num_workers, prefetch_factor, pin_memory, persistent_workers)
    warn_reopening(dataset, shuffle)
    rank, world_size, source = find_topology(rank, world_size)
    device = auto_device(device)
    sampler = ElasticSampler.for_dataset(dataset, batch_size, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
                                         drop_last=drop_last, block_size=block_size, window_blocks=window_blocks,
                                         global_batch_size=global_batch_size)
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and hasattr(dataset, "wire_dtype"):
        dataset = dataset.with_host_dtype(dataset.wire_dtype)  # half the bytes to copy; the device feed widens them
    # On the CPU, workers gather int64 straight into their shared-memory ring: nothing crosses by value, and a
    # narrow batch would cost a widening copy in the training process.
    workers = dict(
        prefetch_factor=prefetch_factor or 4,
        persistent_workers=True if persistent_workers is None else persistent_workers,
        multiprocessing_context=multiprocessing_context,
    ) if num_workers > 0 else {}
    ring, served, batches, layout = None, dataset, sampler, None
    if num_workers > 0:
        layout = dataset.slot_layout(batch_size) if hasattr(dataset, "slot_layout") else probe_layout(dataset, batch_size)
    if layout:
        # A worker's task is `steps` batches; it prefetches about `prefetch_factor` batches, as whole tasks. Its
        # slots in use at once: its prefetched tasks, the task being received, the caller's current and previous
        # batch; on CUDA also a task in the pin-memory thread and the copy in flight.
        slot_bytes = layout_bytes(layout)
        steps = task_steps(slot_bytes)
        tasks = max(2, -(-workers["prefetch_factor"] // steps))
        workers["prefetch_factor"] = tasks
        depth = (tasks + 1) * steps + 2 + ((steps + 2) if on_cuda else 0)
        ring = Ring(slot_bytes, num_workers, depth, pin=on_cuda)
        served, batches = RingDataset(dataset, ring, layout), TaskSampler(sampler, ring, steps)
    dataloader = DataLoader(served, batch_sampler=batches, num_workers=num_workers,
                            collate_fn=keep_batch if ring is not None or num_workers == 0 else to_wire,
                            pin_memory=on_cuda if pin_memory is None else pin_memory, **workers)
    return SdlLoader(dataset, sampler, dataloader, device, ring, topology_source=source)
