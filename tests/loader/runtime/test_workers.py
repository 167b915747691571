"""Worker faults: a killed worker is an error (never a hang), workers die with their parent, a truncated shard is named."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("worker_faults.py")


def _run(*args, timeout=120):
    """The script's output; a hang fails the test by its (generous) timeout instead of hanging the suite."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def _arrow_rows(tmp_path, num_rows=20_000):
    import datasets

    datasets.Dataset.from_dict({"n": list(range(num_rows))}).save_to_disk(str(tmp_path / "rows"), num_shards=2)
    return tmp_path / "rows"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tokens", "arrow"])
def test_a_sigkilled_worker_raises_instead_of_hanging(token_dataset, tmp_path, kind):
    # Far more batches than the workers hold in flight (2 tasks of up to 16 each), so the killed worker still has some to make.
    path = token_dataset(num_tokens=8_000_000, tokens_per_shard=2_000_000) if kind == "tokens" else _arrow_rows(tmp_path)
    for _ in range(3):  # the old hang came in 4 runs of 6
        out = _run("kill-worker", path, kind)
        # Nearly always sdl's WorkerError; PyTorch's own SIGCHLD error if the signal lands in the caller's frame.
        assert ("RAISED WorkerError: DataLoader worker" in out and "killed by SIGKILL" in out) or \
            "RAISED RuntimeError: DataLoader worker" in out, out


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"  # a zombie waiting for init to reap it
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_training_process_is_sigkilled(token_dataset):
    path = token_dataset(num_tokens=200_000, tokens_per_shard=50_000)
    parent = subprocess.Popen([sys.executable, str(SCRIPT), "orphan", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and not any(_gone(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 60
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in workers), "orphaned workers still running"
    finally:
        parent.kill()
        parent.wait()


def _truncate_all(path):
    for shard in sorted(Path(path).glob("shard-*.npy")):
        os.truncate(shard, 200)


@pytest.mark.slow
@pytest.mark.parametrize("mixed", [False, True])
def test_a_shard_truncated_under_running_workers_is_named(token_dataset, mixed):
    from sdl.loader import Mixture, SdlError, TokenWindows, make_loader

    path = token_dataset(num_tokens=200_000, tokens_per_shard=200_000)  # one shard: both workers have it open
    dataset = TokenWindows(path, seq_len=16)
    if mixed:  # a worker killed by SIGBUS: the training process looks at every source of the mixture for the cut file
        other = token_dataset(num_tokens=50_000, tokens_per_shard=50_000, name="other")
        dataset = Mixture({"other": TokenWindows(other, seq_len=16), "cut": dataset})
    batches = iter(make_loader(dataset, batch_size=4, num_workers=2, device="cpu", shuffle=not mixed))
    for _ in range(40):
        next(batches)
    _truncate_all(path)
    with pytest.raises(SdlError, match=r"shard-00000\d\.npy"):
        for _ in batches:
            pass


@pytest.mark.slow
def test_a_worker_killed_by_a_cut_shard_says_nothing_of_shared_memory(token_dataset, monkeypatch, capfd):
    """No check in the workers before they read past the cut (forked, they keep this REFRESH_S): they die of SIGBUS
    silently, and the training process names the file (PyTorch's handler printed "Unexpected bus error … insufficient
    shared memory (shm)" from each worker first)."""
    from sdl.loader import FormatError, TokenWindows, make_loader
    from sdl.loader.index import handles

    monkeypatch.setattr(handles, "REFRESH_S", 1e9)
    path = token_dataset(num_tokens=400_000, tokens_per_shard=400_000)
    batches = iter(make_loader(TokenWindows(path, seq_len=64), batch_size=1, num_workers=2, device="cpu", shuffle=False,
                               multiprocessing_context="fork"))
    for _ in range(20):
        next(batches)
    os.truncate(path / "shard-000000.npy", 128 + 2 * 11_800)  # mid-page: zeros to the page's end, then SIGBUS
    with pytest.raises(FormatError, match=r"shard-000000\.npy is now 23,728 bytes"):
        for _ in batches:
            pass
    assert "bus error" not in capfd.readouterr().err.lower()


def test_a_shard_truncated_in_process_is_named_before_it_is_read(token_dataset, monkeypatch):
    from sdl.loader import FormatError, TokenWindows, make_loader
    from sdl.loader.index import handles

    monkeypatch.setattr(handles, "REFRESH_S", 0.0)
    monkeypatch.setattr(handles, "REFRESH_CALLS", 1)
    path = token_dataset(num_tokens=20_000, tokens_per_shard=5_000)
    batches = iter(make_loader(TokenWindows(path, seq_len=16), batch_size=4, num_workers=0, device="cpu"))
    next(batches)
    _truncate_all(path)
    with pytest.raises(FormatError, match=r"shard-00000\d\.npy is now 200 bytes.*changed under a running loader"):
        next(batches)


def test_an_sdl_error_raised_in_a_worker_reaches_the_caller_as_its_own_one_line_message(token_dataset):
    # A shard rewritten after the loader was made: the worker that opens it finds the change. Without the unwrapping,
    # PyTorch's "Caught FormatError in DataLoader worker process N. Original Traceback …" reached the CLI's one line.
    import numpy as np
    from sdl.loader import TokenWindows, make_loader
    from sdl.loader.errors import FormatError

    path = token_dataset(num_tokens=40_000, tokens_per_shard=10_000)
    loader = make_loader(TokenWindows(path, seq_len=64), 4, num_workers=2, device="cpu")
    shard = sorted(path.glob("shard-*.npy"))[2]
    np.save(shard, np.load(shard)[:5000])
    with pytest.raises(FormatError) as raised:
        for _ in loader:
            pass
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{shard} is now") and "resume from the last checkpoint" in message
    assert "Original Traceback" in str(raised.value.__cause__)  # the worker's traceback, kept as the cause


def test_an_error_that_cannot_be_rebuilt_from_its_message_stays_as_pytorch_raised_it():
    from sdl.loader.errors import SdlError
    from sdl.loader.runtime.workers import worker_error

    class Two(SdlError):
        def __init__(self, what, why):
            super().__init__(f"{what}: {why}")

    wrapped = "Caught {0} in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n  File \"x.py\"\n{1}: {2}\n"
    assert worker_error(Two("a", "b")) is None  # not a re-raise
    assert worker_error(SdlError(wrapped.format("SdlError", "sdl.loader.errors.SdlError", "bad: do X"))).args == ("bad: do X",)
    main_kind = type("Mine", (SdlError,), {"__module__": "__main__"})  # PyTorch's text writes it without its module
    assert worker_error(main_kind(wrapped.format("Mine", "Mine", "one line"))).args == ("one line",)
    assert worker_error(SdlError(wrapped.format("SdlError", "sdl.loader.errors.SdlError", "")[:-3] + "\n")).args == ()
    inner = "outer says: sdl.loader.errors.SdlError: inner"  # the type's name inside the message itself
    assert worker_error(SdlError(wrapped.format("SdlError", "sdl.loader.errors.SdlError", inner))).args == (inner,)
    chained = wrapped.format("SdlError", "KeyError", "'k'").rstrip("\n") + "\n\nDuring handling of the above exception, " \
        "another exception occurred:\n\nTraceback (most recent call last):\n  File \"y.py\"\nsdl.loader.errors.SdlError: last\n"
    assert worker_error(SdlError(chained)).args == ("last",)
    two = Two("x", "y")
    two.args = (wrapped.format("Two", f"{Two.__module__}.{Two.__qualname__}", "a: b"),)
    assert worker_error(two) is None  # Two("a: b") raises: left as it was


class FailsWhileFlagged:
    """Samples 0..63; a batch holding sample 40 raises a FormatError while the file `flag` exists (damaged data)."""

    identity = "flagged"

    def __init__(self, flag):
        self.flag = flag

    def __len__(self):
        return 64

    def __getitems__(self, ids):
        import os

        import torch
        from sdl.loader.errors import FormatError

        if 40 in ids and os.path.exists(self.flag):
            raise FormatError(f"sample 40 is damaged: repair {self.flag}")
        return {"x": torch.tensor(list(ids)), "sample_ids": torch.tensor(list(ids))}


@pytest.mark.parametrize("persistent", [True, False])
def test_after_an_error_in_a_worker_the_next_iteration_starts_afresh_and_no_sample_is_lost_or_repeated(tmp_path, persistent):
    from sdl.loader import make_loader
    from sdl.loader.errors import FormatError

    flag = tmp_path / "damaged"
    flag.write_text("")
    loader = make_loader(FailsWhileFlagged(str(flag)), 4, num_workers=2, device="cpu", persistent_workers=persistent)
    seen = []
    with pytest.raises(FormatError, match=r"^sample 40 is damaged: repair .*damaged$"):
        for batch in loader:
            seen += batch["sample_ids"].tolist()
    workers = loader._workers
    assert all(not process.is_alive() for process in workers._workers)  # shut down, none left to die later
    flag.unlink()  # repaired: the same loader goes on where the caller's batches stopped
    seen += [i for batch in loader for i in batch["sample_ids"].tolist()]
    assert sorted(seen) == list(range(64))
