"""Worker processes that die with their parent: sdl's workers (the DataLoader's, `sdl prepare --num-proc`'s encoders)
never outlive the process that started them, however it dies — SIGKILL from the OOM killer or `kill -9` included.

A worker blocked on a queue whose write end it holds itself never sees its parent go, so each worker calls
`watch_parent` when it starts: on Linux it asks the kernel to SIGKILL it when its parent dies
(`prctl(PR_SET_PDEATHSIG)`; only when the workers are started from the main thread, since the signal follows the
thread that forked, not the process), and on any platform a watchdog thread exits it (`os._exit`, skipping the queue
flush that blocks an orphan on a full pipe) within `PARENT_POLL_S` of its parent's pid changing.
It lives in storage, the lowest room that both `sdl.loader.runtime` and `sdl.prepare` may import.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

PARENT_POLL_S = 0.5
PR_SET_PDEATHSIG = 1


def watch_parent(parent_pid: int, death_signal: bool, worker_id: int = 0) -> None:
    """This worker process exits when process `parent_pid` dies (`death_signal`: started from its main thread)."""
    if death_signal and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass  # the watchdog below still covers it
    if os.getppid() != parent_pid:  # the parent died before this worker started
        os._exit(1)

    def watch() -> None:
        while not stopped.wait(PARENT_POLL_S):
            if os.getppid() != parent_pid:
                os._exit(1)

    stopped = threading.Event()
    threading.Thread(target=watch, name="sdl-parent-watch", daemon=True).start()
