"""Resume after bad input: the roll-back, killed at any of its changes or failing itself, leaves an output that resumes
to an uninterrupted run's bytes; `--repair` of an output finished by a resume with another `--on-error` works."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from corpus import dataset_bytes, make_texts, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from sdl.loader.errors import InputError
from sdl.prepare import PrepareConfig, prepare, repair
from sdl.prepare import pipeline
from sdl.prepare.journal import read_journal

OPTIONS = dict(tokens_per_shard=151, batch_bytes=1200)


class Interrupt(Exception):
    pass


def stop_after(num_shards):
    def progress(p):
        if p.num_shards >= num_shards:
            raise Interrupt
    return progress


def config(tmp_path, sources, name="out", **options):
    return PrepareConfig(sources=tuple(str(s) for s in sources), out=str(tmp_path / name), **OPTIONS, **options)


def interrupted(tmp_path, sources, num_shards, **options):
    """The output of a run stopped after `num_shards` shards, as a kill leaves it."""
    with pytest.raises(Interrupt):
        prepare(config(tmp_path, sources, **options), progress=stop_after(num_shards))
    return tmp_path / "out"


def die_in_roll_back_at(monkeypatch, change):
    """Make the next roll-back die (KeyboardInterrupt: nothing after it runs, as after SIGKILL) at its `change`-th change
    to the folder, a file renamed into place or removed; a list of the changes it made."""
    real_roll_back, real_replace, real_unlink = pipeline.roll_back, os.replace, Path.unlink
    done = []

    def dying(real):
        def call(*args, **kwargs):
            if len(done) == change:
                raise KeyboardInterrupt
            done.append(args)
            return real(*args, **kwargs)
        return call

    def roll_back(*args):
        monkeypatch.setattr(os, "replace", dying(real_replace))
        monkeypatch.setattr(Path, "unlink", dying(real_unlink))
        try:
            return real_roll_back(*args)
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
            monkeypatch.setattr(Path, "unlink", real_unlink)

    monkeypatch.setattr(pipeline, "roll_back", roll_back)
    return done


def same_data(out, whole) -> bool:
    """The same bytes but for the identity the manifest records of each input as read (b.jsonl was rewritten to fix it:
    its inode change time moved)."""
    got, want = dataset_bytes(out), dataset_bytes(whole)
    manifests = [json.loads(files.pop("manifest.json")) for files in (got, want)]
    for manifest in manifests:
        for source in manifest["sources"]:
            source.pop("fingerprint")
    return got == want and manifests[0] == manifests[1]


@pytest.mark.parametrize("earlier_shards", [0, 3])
def test_a_roll_back_killed_at_any_change_leaves_an_output_that_resumes(tmp_path, monkeypatch, earlier_shards):
    """A run meets a bad record (the first of the second input) and rolls back to what earlier runs wrote (nothing, or
    3 shards); killed after any number of its changes, fixing the input and re-running the same command ends with
    the bytes of an uninterrupted run over the fixed input."""
    a = write_jsonl(tmp_path / "a.jsonl", make_texts(24, seed=21, max_words=40))
    good = json.dumps({"text": "the first line of b"}) + "\n" + "".join(json.dumps({"text": t}) + "\n" for t in make_texts(8, seed=22))
    bad = '{"text": 7}\n' + good.split("\n", 1)[1]
    b = tmp_path / "b.jsonl"

    def write_b(text):  # one mtime for either content: the good one's fingerprint is the same each time it is back
        b.write_text(text)
        os.utime(b, ns=(10**18, 10**18))
    write_b(good)
    prepare(config(tmp_path, [a, b], "whole"))
    start = tmp_path / "start"
    write_b(bad)
    if earlier_shards:
        shutil.copytree(interrupted(tmp_path, [a, b], earlier_shards), start)
    change = 0
    while True:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        if earlier_shards:
            shutil.copytree(start, tmp_path / "out")
        write_b(bad)
        done = die_in_roll_back_at(monkeypatch, change)
        with pytest.raises((KeyboardInterrupt, InputError)) as stopped:
            prepare(config(tmp_path, [a, b]))
        monkeypatch.undo()
        if stopped.type is InputError:  # the roll-back ran to its end: the error names the record, its folder is as it was
            assert r"b.jsonl:1: field 'text' is a number" in str(stopped.value) and len(done) == change
        journal = read_journal(tmp_path / "out") if (tmp_path / "out").exists() else None
        if journal is not None:  # never counts a shard that is gone
            assert all((tmp_path / "out" / f"shard-{i:06d}.npy").is_file() for i in range(journal.num_shards))
        write_b(good)
        report = prepare(config(tmp_path, [a, b]))
        assert report.status == "complete" and same_data(tmp_path / "out", tmp_path / "whole"), change
        if stopped.type is InputError:
            break
        change += 1
    assert change >= 10, change  # (the roll-back had changes to be killed at)


def test_a_roll_back_whose_partly_read_input_is_gone_resumes_once_it_is_back(tmp_path):
    """The input the resume started in is moved away mid-run: the run fails on it and rolls back although that input
    cannot be read to record its digest; once it is back, unchanged, the same command resumes to the same bytes."""
    (tmp_path / "in").mkdir()
    a = write_jsonl(tmp_path / "in" / "a.jsonl", make_texts(150, seed=23, max_words=60))
    prepare(config(tmp_path, [a], "whole"))
    out = interrupted(tmp_path, [a], 3)
    earlier = read_journal(out).num_shards
    away = tmp_path / "away"

    def move_away(progress, moved=[]):
        if progress.num_shards >= earlier + 2 and not moved:  # its folder: the file keeps its identity (inode, times)
            moved.append(os.rename(tmp_path / "in", away))
    with pytest.raises(InputError, match=r"a\.jsonl: changed while sdl prepare read it .*now gone.*; kept the \d+ shards"):
        prepare(config(tmp_path, [a]), progress=move_away)
    journal = read_journal(out)
    assert journal.num_shards == earlier and journal.prefix is None
    assert sorted(p.name for p in out.glob("shard-*.npy")) == sorted(f"shard-{i:06d}{s}.npy" for i in range(earlier) for s in ("", ".docs"))
    os.rename(away, tmp_path / "in")
    assert prepare(config(tmp_path, [a])).resumed
    assert dataset_bytes(out) == dataset_bytes(tmp_path / "whole")


@pytest.mark.parametrize("first, then", [("fail", "skip"), ("skip", "fail")])
def test_repair_of_an_output_finished_by_a_resume_with_another_on_error(tmp_path, first, then):
    """Stopped with `--on-error FIRST`, finished with `--on-error THEN` (the documented way past a bad record, and
    back): `--repair` rewrites a lost shard, skipping the bad record as the run that read it did."""
    texts = make_texts(120, seed=24, max_words=40)
    bad_at = 100 if first == "fail" else 5  # past what the first run reads, or inside it
    lines = [json.dumps({"text": t}) for t in texts]
    lines.insert(bad_at, '{"text": 7}')
    a = tmp_path / "a.jsonl"
    a.write_text("\n".join(lines) + "\n")
    prepare(config(tmp_path, [a], "whole", on_error="skip"))
    out = interrupted(tmp_path, [a], 12, on_error=first)
    assert (read_journal(out).num_skipped == 1) == (first == "skip")
    if first == "fail":
        with pytest.raises(InputError, match=r"a\.jsonl:101: field 'text' is a number"):
            prepare(config(tmp_path, [a]))
    assert prepare(config(tmp_path, [a], on_error=then)).resumed
    assert dataset_bytes(out) == dataset_bytes(tmp_path / "whole")
    last = sorted(out.glob("shard-??????.npy"))[-1]
    last.unlink()
    assert repair(out).rewritten == (last.name,)
    assert dataset_bytes(out) == dataset_bytes(tmp_path / "whole")
