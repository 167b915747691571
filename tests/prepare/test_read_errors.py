"""A read error of an input is the input's fault: it names the file, not OUT, and a first run leaves no output folder."""

from __future__ import annotations

import errno

import pytest
from corpus import make_texts, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from sdl.loader.errors import InputError
from sdl.prepare import PrepareConfig, prepare


def test_an_os_error_reading_an_input_is_not_a_write_failure(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(5))

    def failing_batches(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(data))
        yield  # a generator, as the real one

    monkeypatch.setattr("sdl.prepare.pipeline.iter_batches", failing_batches)
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        prepare(PrepareConfig(sources=(str(data),), out=str(out)))
    assert str(caught.value) == f"{data}: cannot read (Input/output error); check the file"
    assert not out.exists()
