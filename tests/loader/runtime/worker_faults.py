"""Run by test_workers.py in a fresh process: a loader whose worker, or whose own process, is killed.

    python worker_faults.py kill-worker DATASET KIND  -> prints RAISED <type>: <message> (or ENDED)
    python worker_faults.py orphan DATASET            -> prints the worker pids, then waits to be killed
"""

import multiprocessing
import os
import signal
import sys
import time

from sdl.loader import make_loader


def dataset(path: str, kind: str):
    if kind == "arrow":
        from sdl.loader import ArrowRows

        return ArrowRows(path)
    from sdl.loader import TokenWindows

    return TokenWindows(path, seq_len=2048)  # 16×2048 batches: by value, 0.5 MB a message, what the old hang needed


def kill_worker(path: str, kind: str) -> None:
    loader = make_loader(dataset(path, kind), batch_size=16, num_workers=2, device="cpu")
    batches = iter(loader)
    next(batches)
    try:
        for k, _ in enumerate(batches):
            if k == 0:
                os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
    except Exception as exc:  # what the training loop would see
        print(f"RAISED {type(exc).__name__}: {exc}", flush=True)
        return
    print("ENDED", flush=True)


def orphan(path: str) -> None:
    loader = make_loader(dataset(path, "tokens"), batch_size=4, num_workers=2, device="cpu")
    batches = iter(loader)
    next(batches)
    print(" ".join(str(w.pid) for w in multiprocessing.active_children()), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    if sys.argv[1] == "kill-worker":
        kill_worker(sys.argv[2], sys.argv[3])
    else:
        orphan(sys.argv[2])
