"""The device feed: host batches onto the accelerator, the next batch's copy in flight while the caller computes.

On CUDA, batch k+1's host→device copy is issued on a side stream (`non_blocking=True`, from pinned
memory) before batch k is handed over; the compute stream waits on an event recorded right after
batch k's own copy (not `wait_stream`, which would also wait for batch k+1's copy issued after it),
and every tensor handed over is `record_stream`-ed on the compute stream so the caching allocator
does not reuse its memory while compute still reads it. Token tensors travel in their narrow host
type (int32) and are widened to int64 on the GPU, after the copy. On CPU nothing is copied; only the
token tensors are widened to int64, as the loss functions expect.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from sdl.loader.errors import ConfigError

TOKEN_KEYS = ("input_ids", "labels", "position_ids")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None means CPU); CUDA asked for but absent is a ConfigError."""
    try:
        resolved = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device is {device!r} ({exc}); expected 'cpu', 'cuda', 'cuda:N' or a torch.device") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device is {str(resolved)!r} but CUDA is not available here; use device='cpu' or run on a GPU machine")
    return resolved


def to_device(batch: Any, device: str | torch.device, stream: torch.cuda.Stream | None = None,
              widen_keys: tuple[str, ...] = TOKEN_KEYS) -> Any:
    """A copy of `batch` (tensors in nested dicts, lists, tuples) on `device`; other values as they are.

    With `stream`, the copies and the widening are issued on it; on CUDA the host tensors are
    pinned first (when not already) so the copy is truly asynchronous. Integer tensors under a key of
    `widen_keys` become int64 on the device, after the narrow copy.
    """
    device = torch.device(device)
    if stream is None:
        return _move(batch, device, widen=False, widen_keys=widen_keys)
    with torch.cuda.stream(stream):
        return _move(batch, device, widen=False, widen_keys=widen_keys)


def ready_on_cpu(batch: Any, widen_keys: tuple[str, ...] = TOKEN_KEYS) -> bool:
    """Whether `to_device(batch, "cpu")` would change nothing but the dict: a dict whose tensors are all on the CPU, those
    under `widen_keys` not narrow integers, and no nested container. The CPU feed then hands `batch` over as it is
    (`tensor.device` costs ~0.7 µs a call, `is_cpu` 0.06 µs: the general walk was ~4 µs of a ~45 µs 16×2048 batch)."""
    if not isinstance(batch, dict):
        return False
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            if not value.is_cpu or (key in widen_keys and value.dtype is not torch.int64 and value.dtype is not torch.bool
                                    and not value.is_floating_point() and not value.is_complex()):
                return False
        elif isinstance(value, (dict, list, tuple)):
            return False
    return True


def _move(value: Any, device: torch.device, widen: bool, widen_keys: tuple[str, ...]) -> Any:
    if isinstance(value, torch.Tensor):
        if device.type == "cuda" and value.device.type == "cpu" and not value.is_pinned():
            value = value.pin_memory()
        moved = value if value.device == device else value.to(device, non_blocking=device.type == "cuda")
        if widen and not moved.is_floating_point() and not moved.is_complex() and moved.dtype not in (torch.int64, torch.bool):
            moved = moved.to(torch.int64)
        return moved
    if isinstance(value, dict):
        return type(value)({key: _move(item, device, key in widen_keys, widen_keys) for key, item in value.items()})
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(_move(item, device, widen, widen_keys) for item in value))
    if isinstance(value, (list, tuple)):
        if value and not isinstance(value[0], (torch.Tensor, dict, list, tuple)):
            return value  # e.g. a column of strings: nothing to move, and walking it costs ~1 µs a value
        return type(value)(_move(item, device, widen, widen_keys) for item in value)
    return value


def tensors_of(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_of(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_of(item)


BACKGROUND_DEPTH = 2  # batches received ahead of the caller on CPU
HEALTH_S = 1.0  # how long the caller waits for a batch before asking `health` whether the source is alive
JOIN_S = 5.0  # how long closing waits for the receiving thread (stuck in a dead worker's pipe, it is left behind)
_END = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class DeviceFeed:
    """Iterate `batches` on `device`, one batch's copy ahead on CUDA; `on_yield(batch)` runs right before each yield."""

    def __init__(self, batches: Iterable[Any], device: str | torch.device | None = None,
                 on_yield: Callable[[Any], None] | None = None, widen_keys: tuple[str, ...] = TOKEN_KEYS,
                 background: bool = False, health: Callable[[], None] | None = None) -> None:
        self.batches = batches
        self.health = health  # raises if the source died (e.g. a DataLoader worker killed): checked while waiting
        self.background = background
        self.device = resolve_device(device)
        self.on_cpu = self.device.type == "cpu"  # `device.type` costs ~0.4 µs a call
        self.on_yield = on_yield
        self.widen_keys = widen_keys
        self.stream: torch.cuda.Stream | None = None  # the side stream, created on the first CUDA iteration

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.device.type == "cuda":
            return self._cuda()
        if self.background:
            return self._background()
        return self._synchronous()

    def _hand_over(self, batch: Any) -> Any:
        if self.on_yield is not None:
            self.on_yield(batch)
        return batch

    def _on_device(self, batch: Any) -> Any:
        """`batch` on the (CPU or meta) device, widened; a CPU batch that needs nothing is handed over as it is."""
        if self.on_cpu and ready_on_cpu(batch, self.widen_keys):
            return batch
        return to_device(batch, self.device, widen_keys=self.widen_keys)

    def _synchronous(self) -> Iterator[Any]:
        for batch in self.batches:
            yield self._hand_over(self._on_device(batch))

    def _background(self) -> Iterator[Any]:
        """CPU: a thread receives (and widens) the next `BACKGROUND_DEPTH` batches while the caller computes, as
        the DataLoader's pin-memory thread does on CUDA; the caller only takes ready batches off a queue."""
        ready: queue.Queue = queue.Queue(maxsize=BACKGROUND_DEPTH)
        stop = threading.Event()

        def offer(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def fill() -> None:
            try:
                for batch in self.batches:
                    if not offer(self._on_device(batch)):
                        return
                offer(_END)
            except BaseException as exc:  # re-raised in the caller's thread
                offer(_Failure(exc))

        thread = threading.Thread(target=fill, name="sdl-feed", daemon=True)
        thread.start()
        failed = True
        try:
            while (item := self._take(ready)) is not _END:
                if isinstance(item, _Failure):
                    raise item.exc
                yield self._hand_over(item)
            failed = False
        finally:
            stop.set()
            thread.join(HEALTH_S if failed else JOIN_S)  # after a failure the thread may be stuck for good

    def _take(self, ready: queue.Queue) -> Any:
        """The next item of `ready`; while it is late, `health()` may raise instead (a dead worker never sends)."""
        while True:
            try:
                return ready.get(timeout=HEALTH_S)
            except queue.Empty:
                if self.health is not None:
                    self.health()
            except RuntimeError:  # PyTorch's SIGCHLD handler: "worker killed by signal"; let `health` say more
                if self.health is not None:
                    self.health()
                raise

    def _cuda(self) -> Iterator[Any]:
        if self.stream is None:
            self.stream = torch.cuda.Stream(device=self.device)
        ahead = self._issue(iter(self.batches))
        pending = next(ahead, None)
        in_copy: collections.deque = collections.deque()  # (event, host batch): host memory a copy may still read
        while pending is not None:
            following = next(ahead, None)  # issue batch k+1's copy before handing over batch k
            batch, copied, host = pending
            in_copy.append((copied, host))
            while in_copy and in_copy[0][0].query():
                in_copy.popleft()
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(copied)
            for tensor in tensors_of(batch):
                if tensor.device.type == "cuda":
                    tensor.record_stream(compute)
            yield self._hand_over(batch)
            pending = following

    def _issue(self, batches: Iterator[Any]) -> Iterator[tuple[Any, torch.cuda.Event, Any]]:
        """(device batch, event marking the end of its copy, host batch) for each host batch, copies on the side stream.

        The host batch is kept until its event has passed: released earlier, a ring slot (pinned, copied from
        asynchronously) could be refilled by its worker while the copy still reads it."""
        for batch in batches:
            moved = to_device(batch, self.device, stream=self.stream, widen_keys=self.widen_keys)
            copied = torch.cuda.Event()
            copied.record(self.stream)
            yield moved, copied, batch
