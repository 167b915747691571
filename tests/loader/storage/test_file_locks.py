"""A cache lock held by a thread of the training process when a DataLoader worker forks stays the parent's alone: once
the parent lets it go, the child can take it (an inherited copy kept it held, and the worker waited forever)."""

import fcntl
import multiprocessing
import threading

from sdl.loader.storage.file_locks import flocked


def try_lock(path, released, answer) -> None:
    released.wait(30)
    with flocked(path, fcntl.LOCK_EX | fcntl.LOCK_NB, OSError) as got:
        answer.send(got)


def test_a_lock_a_thread_holds_when_a_child_forks_is_free_in_the_child_once_the_parent_releases_it(tmp_path):
    path, holding, release = tmp_path / "entry.lock", threading.Event(), threading.Event()

    def prefetcher() -> None:  # as the loader's prefetcher holds an entry's lock while it downloads
        with flocked(path, fcntl.LOCK_EX, OSError):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=prefetcher)
    thread.start()
    holding.wait(30)
    fork = multiprocessing.get_context("fork")
    released, (receive, send) = fork.Event(), fork.Pipe(duplex=False)
    child = fork.Process(target=try_lock, args=(path, released, send))
    child.start()  # forked while the thread holds the lock
    release.set()
    thread.join()
    released.set()
    assert receive.poll(30) and receive.recv() is True
    child.join(30)
    assert child.exitcode == 0
