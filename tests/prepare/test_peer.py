"""`sdl bench-prepare --peer`: the error without LitData, an unknown peer, and the peer's pipeline on a tiny corpus (skipped without LitData)."""

import importlib.util
import json
import sys
import tempfile

import pytest
from sdl.cli.main import main
from sdl.prepare.bench import write_corpus
from sdl.prepare.config import PrepareConfig
from sdl.prepare.peer import litdata_rate, split_corpus
from sdl.prepare.pipeline import prepare


def test_missing_litdata_is_one_error_line_saying_pip_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "litdata", None)  # `import litdata` now raises ImportError
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rc = main(["bench-prepare", "--peer", "litdata", "--corpus-mb", "0.1", "--json"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install litdata" in lines[0]
    assert list(tmp_path.iterdir()) == []  # refused before writing any corpus


def test_unknown_peer_is_refused(capsys):
    assert main(["bench-prepare", "--peer", "nope", "--json"]) == 1
    assert "--peer is 'nope', expected one of litdata" in capsys.readouterr().err


def test_split_keeps_every_byte_in_order(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 300_000)
    parts = split_corpus(corpus, 4)
    assert 1 < len(parts) <= 4
    assert b"".join(p.read_bytes() for p in parts) == corpus.read_bytes()


@pytest.mark.skipif(importlib.util.find_spec("litdata") is None, reason="LitData is not installed (pip install litdata)")
def test_litdata_writes_the_same_tokens_as_sdl(tmp_path):
    files = split_corpus(write_corpus(tmp_path / "corpus.jsonl", 200_000), 2)
    report = prepare(PrepareConfig(sources=tuple(map(str, files)), out=str(tmp_path / "sdl")))
    rate, num_tokens = litdata_rate(files, tmp_path / "litdata", num_workers=1, tokens_per_chunk=report.tokens_per_shard)
    assert rate > 0 and num_tokens == report.num_tokens
    assert json.loads((tmp_path / "litdata" / "index.json").read_text())["chunks"]
