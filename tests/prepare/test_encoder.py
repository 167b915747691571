"""Encoding workers (`--num-proc`) live and stop with the run: they die with a SIGKILLed `sdl prepare`, and leave
Ctrl-C to it, which stops the run with one line.

Each test holds a real `sdl prepare --num-proc 2` at a known point: two inputs, then a FIFO it blocks reading.
The FIFO's write end opens once prepare opened it to read, so by then both files' batches went to the workers,
whose processes exist."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus import make_texts, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from sdl.cli.main import INTERRUPTED


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return found


def open_writer(fifo, process):
    assert process.poll() is None, process.communicate()[1]
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:  # ENXIO: no reader yet
        assert exc.errno == errno.ENXIO
        return None


def blocked_prepare(tmp_path):
    """`sdl prepare a.jsonl b.jsonl z/ OUT --num-proc 2` in a session of its own, blocked reading the FIFO z/z.jsonl;
    (the process, the FIFO's write end)."""
    for name in ("a", "b"):
        write_jsonl(tmp_path / f"{name}.jsonl", make_texts(40, seed=len(name)))
    (tmp_path / "z").mkdir()  # a folder input: a FIFO named as an input of its own is refused (not a file)
    os.mkfifo(tmp_path / "z" / "z.jsonl")
    command = [sys.executable, "-m", "sdl.cli.main", "prepare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), str(tmp_path / "z"),
               str(tmp_path / "out"), "--num-proc", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return process, wait_for(lambda: open_writer(tmp_path / "z" / "z.jsonl", process), "prepare reads the FIFO")


def stat_fields(pid):
    """(state, ppid) of process `pid`; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2:].split()[:2]
    return state, int(ppid)


def alive(pid):
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # a zombie is dead, waiting to be reaped


def children(pid):
    found = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [child for child in found if (fields := stat_fields(child)) and fields[1] == pid]


def is_worker(pid):
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in command and b"resource_tracker" not in command


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_die_with_a_sigkilled_prepare(tmp_path):
    process, writer = blocked_prepare(tmp_path)
    spawned = children(process.pid)  # the encoding workers and multiprocessing's resource tracker
    try:
        assert any(map(is_worker, spawned)), spawned
        process.kill()  # as the OOM killer or kill -9: no clean-up of any kind
        process.wait()
        wait_for(lambda: not any(map(alive, spawned)), "every process prepare started is gone", timeout=30)
    finally:
        os.close(writer)
        for pid in filter(alive, spawned):  # without the fix: do not leave them to the next test
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_ctrl_c_stops_prepare_with_one_line_and_quiet_workers(tmp_path):
    process, writer = blocked_prepare(tmp_path)
    try:
        os.killpg(process.pid, signal.SIGINT)  # as a terminal sends Ctrl-C: to prepare and its workers (some still starting)
        _, err = process.communicate(timeout=120)
    finally:
        os.close(writer)
    assert (process.returncode, err) == (130, INTERRUPTED + "\n")
