"""The lives of DataLoader workers: they die with the training process, and a dead one is reported, never waited for.

- **Orphans**: each worker, when it starts (`WorkerInit`, the DataLoader's `worker_init_fn`), calls
  `sdl.loader.storage.orphans.watch_parent`: a death signal from Linux and a watchdog thread exit it
  when its parent dies — any platform, any death, SIGKILL included.
- **Dead workers**: the training process checks its workers whenever it has waited `HEALTH_S` for a
  batch (`check_workers`): a worker that exited (the OOM killer's SIGKILL, a crash) raises a
  `WorkerError` naming it and its signal; a SIGBUS death (a memory-mapped file truncated under it)
  first looks for a source whose file changed and names it. A worker dies of SIGBUS silently: PyTorch's own handler,
  which `WorkerInit` puts back to the default, printed "Unexpected bus error … insufficient shared memory (shm)" from
  every worker that hit the cut, before the error that names the file.
- **Errors in a worker**: PyTorch re-raises a worker's exception in the training process as the same type, its
  message replaced by "Caught X in DataLoader worker process N. Original Traceback …". For an sdl error (a stale
  or corrupt shard found by a worker, an object store that failed it) `worker_error` restores the worker's own
  one-line message, so that the caller and the CLI see exactly what the same error says without workers; the
  workers are then shut down, so that none is left to die later and the next iteration starts afresh.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from sdl.loader.errors import SdlError, WorkerError
from sdl.loader.index.handles import check_files
from sdl.loader.storage.orphans import watch_parent

HEALTH_S = 1.0


class WorkerInit:
    """A picklable worker_init_fn: `watch_parent` for the current process, then the user's own init, if any."""

    def __init__(self, user_init: Any = None) -> None:
        self.parent_pid = os.getpid()
        self.death_signal = threading.current_thread() is threading.main_thread()
        self.user_init = user_init

    def __call__(self, worker_id: int) -> None:
        watch_parent(self.parent_pid, self.death_signal, worker_id)
        if hasattr(signal, "SIGBUS"):  # PyTorch's handler prints that shared memory may have run out, then dies: the
            signal.signal(signal.SIGBUS, signal.SIG_DFL)  # same death, and `check_workers` says what it was (a cut file)
        if self.user_init is not None:
            self.user_init(worker_id)


def check_workers(iterator: Any, dataset: Any) -> None:
    """Raise WorkerError if a worker of the DataLoader `iterator` exited (a SIGBUS naming a changed source if it finds one)."""
    for worker_id, process in enumerate(getattr(iterator, "_workers", None) or []):
        code = process.exitcode
        if code is None or code == 0:
            continue
        if code == -signal.SIGBUS:  # a file mapped by the dataset, or by any source of a mixture, may have been cut
            for _, source in leaf_sources(dataset):
                docs = getattr(getattr(source, "_doc_starts", None), "recorded", None)  # TokenWindows' docs files
                for files in (getattr(source, "index", None), docs):
                    if getattr(files, "sources", None) is not None:
                        check_files(files, range(len(files.sources)))
        how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit code {code}"
        hint = ("a memory-mapped file was truncated or shared memory (/dev/shm) ran out" if code == -signal.SIGBUS
                else "the OOM killer, a crash, or a kill")
        raise WorkerError(f"DataLoader worker {worker_id} (pid {process.pid}) died ({how}; likely {hint}); the loader "
                          "stopped instead of waiting for its batches: check memory and the data, then resume from the last checkpoint")


def leaf_sources(dataset: Any, name: str | None = None) -> list[tuple[str | None, Any]]:
    """(name, dataset) of `dataset` itself, or of each source of a Mixture (its `names` and `sources` tuples), nested
    ones too ("outer/inner"); name None: not a mixture's source."""
    names, sources = getattr(dataset, "names", None), getattr(dataset, "sources", None)
    if not (isinstance(names, tuple) and isinstance(sources, tuple) and len(names) == len(sources)):
        return [(name, dataset)]
    return [found for inner, source in zip(names, sources)
            for found in leaf_sources(source, inner if name is None else f"{name}/{inner}")]


def worker_error(exc: SdlError) -> SdlError | None:
    """The sdl error that PyTorch re-raised from a DataLoader worker as `exc`, with the worker's own message (see the
    module docstring); None when `exc` is not such a re-raise. The message is what follows the type's name in the
    last traceback of PyTorch's text (which writes a class of `__main__` without its module)."""
    text, kind = str(exc), type(exc)
    if not text.startswith(f"Caught {kind.__name__} ") or "\nOriginal Traceback" not in text:
        return None
    lines = text[text.rfind("Traceback (most recent call last):"):].split("\n")[1:]
    at = next((i for i, line in enumerate(lines) if not line.startswith(" ")), len(lines))  # past the frames
    line = lines[at] if at < len(lines) else ""
    name = kind.__qualname__ if kind.__module__ in ("__main__", "builtins") else f"{kind.__module__}.{kind.__qualname__}"
    if not (line == name or line.startswith(f"{name}: ")):
        return None
    message = "\n".join([line[len(name) + 2:], *lines[at + 1:]]).rstrip("\n")
    try:
        return kind(message) if message else kind()
    except Exception:  # a subclass whose constructor wants more than a message: PyTorch's as it is
        return None
