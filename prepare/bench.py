"""The prepare benchmark: end-to-end `prepare()` throughput against the tokenizer's own batch encoding of the same text, and peak RSS vs input size.

Measured, never asserted: `sdl bench-prepare` prints the figures that BENCHMARKS.md records. With a peer
(`--peer litdata`, see `sdl.prepare.peer` for what is and is not the same) the corpus is split into
several files and the peer's pipeline runs on them beside `prepare()`, at the same process counts.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdl.loader.errors import ConfigError
from sdl.prepare.config import PrepareConfig
from sdl.prepare.encoder import SINGLE_THREAD_ENV
from sdl.prepare.peer import NUM_FILES, litdata_rate, require_peer, split_corpus
from sdl.prepare.pipeline import prepare
from sdl.prepare.sources import stdlib_files
from sdl.prepare.tokenizer import load_tokenizer

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class PrepareBenchReport:
    corpus_bytes: int
    num_tokens: int
    tokenizer_tokens_per_s: dict[int, float]   # num_proc -> the tokenizer's own encode_batch_fast rate on the same text
    prepare_tokens_per_s: dict[int, float]     # num_proc -> end-to-end prepare() rate (pool start-up included)
    peak_rss_mb: dict[str, float]              # "1x"/"10x" -> peak RSS of a whole `sdl prepare` run
    rss_bytes: dict[str, int]
    peer: str | None = None                    # "litdata", or None when no peer was measured
    peer_version: str | None = None
    peer_tokens_per_s: dict[int, float] = field(default_factory=dict)  # num_proc -> the peer's end-to-end rate, same files
    tokens_written: dict[str, int] = field(default_factory=dict)        # "sdl"/peer -> tokens each wrote (EOS included)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, **asdict(self)}


def write_corpus(path: Path, num_bytes: int) -> Path:
    """A JSONL corpus of ~`num_bytes` of text: the stdlib sources, cycled (as UTF-8, undecodable files skipped)."""
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        for source in itertools.cycle(stdlib_files()[:3000]):
            try:
                text = source.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            handle.write(json.dumps({"text": text}) + "\n")
            written += len(text.encode())
            if written >= num_bytes:
                return path


def _chunks(path: Path) -> list[list[str]]:
    chunks, chunk, size = [], [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            chunk.append(json.loads(line)["text"])
            size += len(chunk[-1])
            if size >= CHUNK_BYTES:
                chunks.append(chunk)
                chunk, size = [], 0
    return chunks + ([chunk] if chunk else [])


_tokenizer: list[Any] = []


def _init(json_text: str) -> None:
    import os

    os.environ.update(SINGLE_THREAD_ENV)
    from tokenizers import Tokenizer

    _tokenizer[:] = [Tokenizer.from_str(json_text)]


def _count(texts: list[str]) -> int:
    return sum(len(e.ids) for e in _tokenizer[0].encode_batch_fast(texts, add_special_tokens=False))


def tokenizer_rate(chunks: list[list[str]], num_proc: int) -> tuple[float, int]:
    """(tokens/s, tokens) of encode_batch_fast alone over `chunks`, one thread in each of `num_proc` warm processes."""
    spec = load_tokenizer()
    with multiprocessing.get_context("spawn").Pool(num_proc, initializer=_init, initargs=(spec.json,)) as pool:
        pool.map(_count, [["warm up"]] * num_proc)
        started = time.perf_counter()
        num_tokens = sum(pool.imap(_count, chunks))
        return num_tokens / (time.perf_counter() - started), num_tokens


def peak_rss(corpus: Path, out: Path, num_proc: int) -> int:
    """Peak RSS (bytes) of the largest process of one `sdl prepare` run, measured from a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    command = [sys.executable, "-c", wrapper, sys.executable, "-m", "sdl.cli.main", "prepare", str(corpus), str(out),
               "--tokens-per-shard", "1000000", "--num-proc", str(num_proc), "--json"]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1]) * 1024


def check_sizes(sizes_mb: dict[str, float], num_procs: dict[str, tuple[int, ...]]) -> None:
    """Sizes in MB finite and > 0, process counts >= 1, keyed by the name the caller knows them by (a flag, a parameter)."""
    for name, value in sizes_mb.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name} is {value!r}, expected a positive number of MB (e.g. 0.1 for a quick run)")
    for name, counts in num_procs.items():
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            raise ConfigError(f"{name} is {counts!r}, expected process counts >= 1")


def run_bench(corpus_mb: float = 24, rss_mb: float = 4, num_procs: tuple[int, ...] = (1, 2),
              peer: str | None = None) -> PrepareBenchReport:
    check_sizes({"corpus_mb": corpus_mb, "rss_mb": rss_mb}, {"num_procs": num_procs})
    peer_version = require_peer(peer) if peer else None
    with tempfile.TemporaryDirectory(prefix="sdl-bench-prepare-") as tmp:
        tmp_path = Path(tmp)
        corpus = write_corpus(tmp_path / "corpus.jsonl", int(corpus_mb * 1e6))
        corpus_bytes = corpus.stat().st_size
        inputs = split_corpus(corpus, NUM_FILES) if peer else [corpus]
        chunks = [chunk for path in inputs for chunk in _chunks(path)]
        tokenizer, prepared, peer_rates, written, num_tokens = {}, {}, {}, {}, 0
        for num_proc in num_procs:
            tokenizer[num_proc], num_tokens = tokenizer_rate(chunks, num_proc)
            config = PrepareConfig(sources=tuple(map(str, inputs)), out=str(tmp_path / f"out-{num_proc}"), num_proc=num_proc)
            report = prepare(config)
            prepared[num_proc], written["sdl"] = report.tokens_per_second, report.num_tokens
            if peer:
                peer_rates[num_proc], written[peer] = litdata_rate(inputs, tmp_path / f"{peer}-{num_proc}", num_proc,
                                                                   tokens_per_chunk=config.tokens_per_shard)
        rss = {}
        # The 10x input repeats the 1x input, so both hold the same documents (peak RSS follows the largest
        # document in a batch, which a different mix of files would change).
        small = write_corpus(tmp_path / "rss-1x.jsonl", int(rss_mb * 1e6))
        (tmp_path / "rss-10x.jsonl").write_bytes(small.read_bytes() * 10)
        for name in ("1x", "10x"):
            rss[name] = peak_rss(tmp_path / f"rss-{name}.jsonl", tmp_path / f"rss-out-{name}", max(num_procs))
    return PrepareBenchReport(corpus_bytes=corpus_bytes, num_tokens=num_tokens,
                              tokenizer_tokens_per_s={k: round(v) for k, v in tokenizer.items()},
                              prepare_tokens_per_s={k: round(v) for k, v in prepared.items()},
                              peak_rss_mb={k: round(v / 2**20, 1) for k, v in rss.items()}, rss_bytes=rss,
                              peer=peer, peer_version=peer_version, peer_tokens_per_s={k: round(v) for k, v in peer_rates.items()},
                              tokens_written=written)
