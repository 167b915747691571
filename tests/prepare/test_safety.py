"""Data safety of prepare: a failing resume keeps earlier work, one writer per folder, inputs checked where read,
dead workers stop the run, --overwrite and --repair really rewrite, long documents encode in pieces by the stated rule."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from corpus import Interrupt, dataset_bytes, make_texts, read_dataset, stop_after, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from sdl.loader.errors import ConfigError, InputError, SdlError
from sdl.prepare import PrepareConfig, load_tokenizer, prepare
from sdl.prepare.journal import read_journal


def config(tmp_path, sources, name="out", **options):
    return PrepareConfig(sources=tuple(str(s) for s in sources), out=str(tmp_path / name), **options)


def interrupted(tmp_path, sources, num_shards, name="out", **options):
    """An output folder whose run stopped after `num_shards` shards, as a kill leaves it."""
    with pytest.raises(Interrupt):
        prepare(config(tmp_path, sources, name, **options), progress=stop_after(num_shards))
    return tmp_path / name


OPTIONS = dict(tokens_per_shard=151, batch_bytes=1200)


def test_failing_resume_keeps_earlier_work_and_continues_either_way(tmp_path):
    texts = make_texts(150, seed=11, max_words=60)
    path = write_jsonl(tmp_path / "a.jsonl", texts)
    with open(path, "a") as handle:
        handle.write('{"text": 7}\n' + json.dumps({"text": "after the bad line"}) + "\n")
    out = interrupted(tmp_path, [path], 5, **OPTIONS)
    kept = {name: data for name, data in dataset_bytes(out).items() if name.startswith("shard-")}
    num_shards = read_journal(out).num_shards
    assert num_shards >= 5
    with pytest.raises(InputError, match=rf"a\.jsonl:151: field 'text' is a number.*; kept the {num_shards} shards .* --on-error skip"):
        prepare(config(tmp_path, [path], **OPTIONS))
    assert {n: d for n, d in dataset_bytes(out).items() if n.startswith("shard-")} == kept
    assert read_journal(out).num_shards == num_shards
    # Either way on: skip the bad record ...
    shutil.copytree(out, tmp_path / "copy")
    report = prepare(config(tmp_path, [path], **OPTIONS, on_error="skip"))
    assert report.resumed and report.num_skipped == 1
    whole = prepare(config(tmp_path, [path], "whole-skip", **OPTIONS, on_error="skip"))
    assert dataset_bytes(out) == dataset_bytes(tmp_path / "whole-skip") and whole.num_docs == report.num_docs
    # ... or fix the input past what was read, and re-run the same command.
    path.write_text(path.read_text().replace('{"text": 7}', '{"text": "seven"}'))
    report = prepare(config(tmp_path, [path], "copy", **OPTIONS))
    assert report.resumed and report.num_docs == 152
    prepare(config(tmp_path, [path], "whole-fixed", **OPTIONS))
    assert dataset_bytes(tmp_path / "copy") == dataset_bytes(tmp_path / "whole-fixed")


def test_an_input_changed_where_it_was_read_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(150, seed=12, max_words=60))
    out = interrupted(tmp_path, [path], 4, **OPTIONS)
    path.write_text(path.read_text().replace("doc 0:", "doc O:"))
    with pytest.raises(ConfigError, match=r"a\.jsonl changed .* where an earlier run already read it"):
        prepare(config(tmp_path, [path], **OPTIONS))
    assert read_journal(out).num_shards >= 4


def test_the_same_input_spelled_differently_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "x.jsonl", make_texts(120, seed=13, max_words=60))
    interrupted(tmp_path, ["./data/x.jsonl"], 4, **OPTIONS)
    report = prepare(config(tmp_path, ["data/x.jsonl"], **OPTIONS))
    assert report.resumed
    prepare(config(tmp_path, ["data//x.jsonl"], "whole", **OPTIONS))
    assert dataset_bytes(tmp_path / "out") == dataset_bytes(tmp_path / "whole")


def test_an_input_appended_to_while_read_is_refused_and_nothing_is_left(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(100, seed=14, max_words=60))

    def append_once(progress, done=[]):
        if not done:
            done.append(1)
            with open(path, "a") as handle:
                handle.write(json.dumps({"text": "late"}) + "\n")
    with pytest.raises(InputError, match=r"a\.jsonl: changed while sdl prepare read it \(was [\d,]+ bytes, now [\d,]+ bytes\)"):
        prepare(config(tmp_path, [path], **OPTIONS), progress=append_once)
    assert not (tmp_path / "out").exists()
    assert prepare(config(tmp_path, [path], **OPTIONS)).num_docs == 101


LOCK_HOLDER = """
import sys, time
from sdl.prepare.lock import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(300)
"""


def test_one_writer_per_folder_and_a_dead_holder_is_taken_over(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(30, seed=15))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(SdlError, match=rf"out is being written by another sdl prepare \(pid {holder.pid} on host "):
            prepare(config(tmp_path, [path], **OPTIONS))
        assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == [".sdl", "lock"]
    finally:
        holder.kill()  # SIGKILL: the holder cannot clean up; its lock file stays behind
        holder.wait()
    assert (tmp_path / "out" / ".sdl" / "lock").exists()
    assert prepare(config(tmp_path, [path], **OPTIONS)).status == "complete"
    assert not (tmp_path / "out" / ".sdl" / "lock").exists()


@pytest.mark.slow
def test_a_dead_worker_stops_prepare_and_the_rerun_resumes(tmp_path):
    paths = [write_jsonl(tmp_path / f"{i}.jsonl", make_texts(200, seed=i, max_words=60)) for i in range(3)]
    options = dict(tokens_per_shard=401, batch_bytes=1500, num_proc=2)

    def kill_a_worker(progress, done=[]):
        if progress.num_shards >= 2 and not done:
            done.append(os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL))
    def hang(*_):
        raise TimeoutError("prepare hung after a worker died")
    signal.signal(signal.SIGALRM, hang)
    signal.alarm(120)  # a hang (the old multiprocessing.Pool waited forever) fails the test instead
    try:
        with pytest.raises(SdlError, match="an encoding worker process died .* re-run the same command to continue"):
            prepare(config(tmp_path, paths, **options), progress=kill_a_worker)
    finally:
        signal.alarm(0)
    assert done_shards(tmp_path / "out") >= 2
    assert prepare(config(tmp_path, paths, **options)).resumed
    prepare(config(tmp_path, paths, "whole", **options))
    assert dataset_bytes(tmp_path / "out") == dataset_bytes(tmp_path / "whole")


def done_shards(out):
    return read_journal(out).num_shards


def test_overwrite_rewrites_a_finished_output(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(60, seed=16))
    prepare(config(tmp_path, [path], **OPTIONS))
    before = dataset_bytes(tmp_path / "out")
    (tmp_path / "out" / "shard-000001.npy").write_bytes(b"junk")
    report = prepare(config(tmp_path, [path], **OPTIONS, overwrite=True))
    assert report.status == "complete" and dataset_bytes(tmp_path / "out") == before


def test_an_overwrite_killed_while_removing_never_leaves_a_complete_claim_without_its_shards(tmp_path, monkeypatch):
    """The old output's journal is cut back to no shards first and removed last: stopped after any number of removals,
    either the journal still says "complete" and every shard it lists is there, or nothing claims completeness and a
    re-run of the same command (no --overwrite needed) starts afresh."""
    from pathlib import Path

    from sdl.prepare.journal import remove_output

    path = write_jsonl(tmp_path / "a.jsonl", make_texts(60, seed=16))
    prepare(config(tmp_path, [path], **OPTIONS))
    whole = tmp_path / "whole"
    shutil.copytree(tmp_path / "out", whole)
    unlink = Path.unlink
    for allowed in range(12):
        shutil.rmtree(tmp_path / "out")
        shutil.copytree(whole, tmp_path / "out")
        calls = []

        def dying_unlink(self, missing_ok=False):
            if len(calls) == allowed:
                raise KeyboardInterrupt  # the process is killed here
            calls.append(self)
            unlink(self, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", dying_unlink)
        with pytest.raises(KeyboardInterrupt):
            remove_output(tmp_path / "out")
        monkeypatch.setattr(Path, "unlink", unlink)
        journal = read_journal(tmp_path / "out")
        if journal is not None and journal.complete:
            assert all((tmp_path / "out" / f"shard-{i:06d}.npy").exists() for i in range(journal.num_shards))
            assert prepare(config(tmp_path, [path], **OPTIONS)).status == "already complete"
        else:  # nothing claims completeness, and the journal (of no shards) is still there: a plain run starts afresh
            assert journal is not None and journal.num_shards == 0
            assert prepare(config(tmp_path, [path], **OPTIONS)).status == "complete"
            assert dataset_bytes(tmp_path / "out") == dataset_bytes(whole)
        report = prepare(config(tmp_path, [path], **OPTIONS, overwrite=True))
        assert report.status == "complete" and dataset_bytes(tmp_path / "out") == dataset_bytes(whole)


def test_repair_rewrites_only_the_damaged_shards(tmp_path):
    from sdl.prepare import repair

    path = write_jsonl(tmp_path / "a.jsonl", make_texts(120, seed=17, max_words=60))
    out = tmp_path / "out"
    prepare(config(tmp_path, [path], **OPTIONS))
    before = dataset_bytes(out)
    names = sorted(n for n in before if n.startswith("shard-") and not n.endswith(".docs.npy"))
    (out / names[1]).unlink()
    (out / names[3]).write_bytes(before[names[3]][:-1] + bytes([before[names[3]][-1] ^ 0xFF]))
    (out / names[3].replace(".npy", ".docs.npy")).unlink()
    untouched = {n: (out / n).stat().st_mtime_ns for n in names if n not in (names[1], names[3])}
    report = repair(out)
    assert report.rewritten == (names[1], names[3])
    assert dataset_bytes(out) == before
    assert {n: (out / n).stat().st_mtime_ns for n in untouched} == untouched
    assert repair(out).rewritten == ()


def test_repair_rewrites_a_docs_file_whose_starts_are_not_where_documents_begin(tmp_path):
    """Its count and order still fit the manifest, which records no checksum of it: the shard's tokens tell (an EOS
    before each start); it was left as it was."""
    from sdl.prepare import repair

    path = write_jsonl(tmp_path / "a.jsonl", make_texts(120, seed=17, max_words=60))
    out = tmp_path / "out"
    prepare(config(tmp_path, [path], **OPTIONS))
    before = dataset_bytes(out)
    docs = next(docs for docs in sorted(out.glob("shard-*.docs.npy")) if len(np.load(docs)) >= 2)
    np.save(docs, np.load(docs) + 1)
    assert repair(out).rewritten == (docs.name.replace(".docs", ""),)
    assert dataset_bytes(out) == before


def test_a_stray_shard_like_file_is_left_alone(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(100, seed=18, max_words=60))
    out = interrupted(tmp_path, [path], 3, **OPTIONS)
    (out / "shard-backup.npy").write_bytes(b"the user's")
    assert prepare(config(tmp_path, [path], **OPTIONS)).resumed
    assert (out / "shard-backup.npy").read_bytes() == b"the user's"


def white(char):
    """Unicode White_Space, as the tokenizer reads it: str.isspace less the ASCII separators."""
    return char.isspace() and char not in "\x1c\x1d\x1e\x1f"


def by_the_rule(text, piece_chars):
    """The manifest's piece rule, character by character: cut right before the last whitespace followed by a
    non-whitespace among the `piece_chars` characters after the piece's first, else after `piece_chars`."""
    pieces, start = [], 0
    while len(text) - start > piece_chars:
        starts = [i for i in range(start + 1, start + piece_chars + 1)
                  if i + 1 < len(text) and white(text[i]) and not white(text[i + 1])]
        end = starts[-1] if starts else start + piece_chars
        pieces.append(text[start:end])
        start = end
    return pieces + [text[start:]]


def test_long_documents_are_encoded_in_pieces_by_the_stated_rule(tmp_path):
    from sdl.prepare.tokenizer import split_pieces

    tok = load_tokenizer().build()
    words = make_texts(1, seed=19, max_words=3000)[0] + " " + "x" * 250 + "  \n  tail"
    path = write_jsonl(tmp_path / "a.jsonl", ["short one", words])
    report = prepare(config(tmp_path, [path], tokens_per_shard=500, piece_chars=97))
    pieces = list(split_pieces(words, 97))
    assert pieces == by_the_rule(words, 97) and "".join(pieces) == words and len(pieces) > 60
    expected = np.concatenate([tok.encode(p, add_special_tokens=False).ids for p in pieces] + [[0]])
    _, docs, manifest = read_dataset(tmp_path / "out")
    assert manifest["piece_chars"] == 97 and report.num_docs == 2
    assert np.array_equal(docs[1], expected)
    plain = words.split(" x")[0]  # no hard cut: for byte-level BPE the pieces' tokens are the whole document's
    assert sum((tok.encode(p, add_special_tokens=False).ids for p in split_pieces(plain, 97)), []) == tok.encode(plain).ids
