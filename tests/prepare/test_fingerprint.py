"""Input fingerprints: an input edited in place where it was read is refused even with its size and mtime put back;
an unfinished journal of an earlier sdl (size and mtime only) is refused in one line, a finished one still reads."""

from __future__ import annotations

import json
import os

import pytest
from corpus import Interrupt, make_texts, stop_after, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from sdl.loader.errors import ConfigError, FormatError
from sdl.prepare import PrepareConfig, prepare
from sdl.prepare.journal import journal_path, read_journal


def run(tmp_path, path, progress=None, name="out"):
    config = PrepareConfig(sources=(str(path),), out=str(tmp_path / name), tokens_per_shard=151, batch_bytes=1200)
    return prepare(config, progress=progress)


def test_an_input_edited_in_place_with_size_and_mtime_put_back_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(150, seed=21, max_words=60))
    with pytest.raises(Interrupt):
        run(tmp_path, path, stop_after(4))
    before = os.stat(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"doc 0:")
    data[at:at + 6] = b"doc O:"  # same size, already read
    with open(path, "r+b") as handle:  # in place: same inode
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as touch -r, rsync -t, cp -p do
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns, os.stat(path).st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    with pytest.raises(ConfigError, match=r"a\.jsonl changed .* where an earlier run already read it"):
        run(tmp_path, path)


def old_journal(out):
    """The journal as an sdl that fingerprinted inputs by size and mtime only wrote it."""
    data = json.loads(journal_path(out).read_text())
    data["inputs"] = [",".join(text.split(",")[:2]) for text in data["inputs"]]
    journal_path(out).write_text(json.dumps(data))


def test_an_earlier_sdls_journal_is_refused_unfinished_and_read_finished(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(150, seed=22, max_words=60))
    with pytest.raises(Interrupt):
        run(tmp_path, path, stop_after(4))
    old_journal(tmp_path / "out")
    with pytest.raises(FormatError, match=r"prepare-journal\.json: an unfinished run journalled by an earlier sdl, .*; finish it "
                                          r"with that sdl, or pass --overwrite to start again$"):
        run(tmp_path, path)
    run(tmp_path, path, name="done")
    old_journal(tmp_path / "done")
    assert run(tmp_path, path, name="done").status == "already complete"
    assert read_journal(tmp_path / "done").complete
