"""The encoding stage: record batches -> token arrays, in this process or in `num_proc` spawned workers, results in input order.

Workers parse records (JSON) and encode with one tokenizer thread each, so N processes use N cores and
the output never depends on N. At most `2 * num_proc` batches are in flight, so memory stays bounded
however large the input. Workers die with the main process (even by SIGKILL) and leave Ctrl-C to it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sdl.loader.errors import SdlError
from sdl.loader.storage.orphans import watch_parent
from sdl.prepare.records import RecordBatch, RecordError, record_text
from sdl.prepare.tokenizer import encode_texts

SINGLE_THREAD_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}


@dataclass(frozen=True, kw_only=True, slots=True)
class EncodeOptions:
    tokenizer_json: str
    dtype: str
    text_field: str
    on_error: str
    bos_id: int | None
    eos_id: int | None
    piece_chars: int


@dataclass(frozen=True, kw_only=True, slots=True)
class EncodedBatch:
    source_index: int
    records: np.ndarray          # record index of each document
    tokens: np.ndarray           # the documents' tokens, concatenated ([BOS] ids [EOS] each)
    lengths: np.ndarray          # tokens per document
    skipped: tuple[int, ...]     # records skipped as malformed (--on-error skip)
    error: str | None            # the first malformed record's message (--on-error fail); documents after it are absent
    num_bytes: int


class WorkerDiedError(SdlError):
    """A worker process of `--num-proc` died; what was journalled is whole, and a re-run continues."""


_worker: dict[str, Any] = {}


def _init_worker(options: EncodeOptions, parent_pid: int | None = None, death_signal: bool = False) -> None:
    """Ready this process to encode; a worker process (`parent_pid` given) also ignores Ctrl-C, which the parent handles
    for the run, and dies with the parent, where it would wait on its task queue forever."""
    if parent_pid is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked from the start (spawned in sigint_blocked)
        watch_parent(parent_pid, death_signal)
    os.environ.update(SINGLE_THREAD_ENV)
    from tokenizers import Tokenizer

    _worker["tokenizer"] = Tokenizer.from_str(options.tokenizer_json)
    _worker["options"] = options


def _encode(batch: RecordBatch) -> EncodedBatch:
    """Parse and encode one batch; with on_error=fail, stop at the first bad record (the documents before it are kept)."""
    options: EncodeOptions = _worker["options"]
    texts, records, skipped, error = [], [], [], None
    for record, item in zip(batch.records, batch.items):
        try:
            text = record_text(batch.kind, item, batch.path, record, options.text_field)
        except RecordError as exc:
            if options.on_error == "fail":
                error = str(exc)
                break
            skipped.append(record)
            continue
        if text is not None:
            texts.append(text)
            records.append(record)
    tokens, lengths = encode_texts(_worker["tokenizer"], texts, bos_id=options.bos_id, eos_id=options.eos_id, dtype=options.dtype,
                                   piece_chars=options.piece_chars)
    return EncodedBatch(source_index=batch.source_index, records=np.asarray(records, dtype=np.int64), tokens=tokens,
                        lengths=lengths, skipped=tuple(skipped), error=error, num_bytes=batch.num_bytes)


@contextmanager
def environment(values: dict[str, str] = SINGLE_THREAD_ENV) -> Iterator[None]:
    """`values` set in os.environ (inherited by worker processes started inside), restored afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread, so that a worker process spawned inside starts with it blocked: Ctrl-C (sent to
    the terminal's whole process group) then never interrupts a worker still importing, which printed a traceback. The
    parent still gets it: in another thread of its own, or here once unblocked."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def encode_batches(batches: Iterator[RecordBatch], options: EncodeOptions, num_proc: int = 1) -> Iterator[EncodedBatch]:
    """Encoded batches in the order of `batches`; `num_proc` > 1 encodes in worker processes."""
    if num_proc == 1:
        with environment():
            _init_worker(options)
            for batch in batches:
                yield _encode(batch)
        return
    # ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (the OOM killer's SIGKILL) breaks the
    # executor and every pending result raises, where a Pool silently replaces the worker and waits forever.
    context = multiprocessing.get_context("spawn")  # fork after torch/Rust threads started is unsafe
    parent = (os.getpid(), threading.current_thread() is threading.main_thread())  # see sdl.loader.storage.orphans
    pool = ProcessPoolExecutor(num_proc, mp_context=context, initializer=_init_worker, initargs=(options, *parent))
    try:
        pending: deque = deque()
        for batch in batches:
            with sigint_blocked():  # submit starts the workers
                pending.append(pool.submit(_encode, batch))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise WorkerDiedError("an encoding worker process died (killed, e.g. by the out-of-memory killer); every shard "
                              "written so far is kept: re-run the same command to continue (with fewer --num-proc if memory is short)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
