"""`sdl demo` end to end on a small corpus: it completes, and its exactly-once verdict is computed (a broken loader fails it)."""

import json

from sdl.cli.main import main
from sdl.loader.sampling.sampler import ElasticSampler
from sdl.loader.sampling.state import LoaderState

SMALL = ["--max-docs", "40", "--seq-len", "64", "--batch-size", "4", "--bench-steps", "0"]


def run(capsys, *args):
    rc = main(["demo", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_demo_completes_and_tells_each_step(capsys, tmp_path):
    rc, out, _ = run(capsys, *SMALL, "--out", tmp_path / "demo")
    assert rc == 0, out
    for step in ("prepare", "index + validate", "train on 4 ranks", "reshard 4 → 3", "resume on 3 ranks", "verify", "PASS"):
        assert step in out
    assert sorted(p.name for p in (tmp_path / "demo" / "checkpoints" / "world3").iterdir()) == ["rank_0.pt", "rank_1.pt", "rank_2.pt"]


def test_demo_json_verdict_counts_every_sample(capsys, tmp_path):
    rc, out, _ = run(capsys, *SMALL, "--out", tmp_path / "demo", "--json")
    assert rc == 0
    report = json.loads(out)
    verdict = report["verdict"]
    assert report["ok"] and verdict["ok"] and verdict["repeated"] == 0
    assert verdict["missing"] == verdict["dropped"] < 3 * 4  # the tail is less than one global batch of the 3-rank world
    assert verdict["delivered"] == verdict["distinct"] == verdict["num_samples"] - verdict["dropped"]
    assert report["bench"] is None


def test_demo_with_a_short_bench(capsys, tmp_path):
    rc, out, _ = run(capsys, "--max-docs", "40", "--seq-len", "64", "--batch-size", "4", "--bench-steps", "2",
                     "--out", tmp_path / "demo", "--json")
    assert rc == 0
    bench = json.loads(out)["bench"]
    assert bench["dataset"]["synthetic"] is False and bench["throughput"]["sdl_in_process"]["samples_per_s"] > 0


def test_a_saved_state_that_skips_a_sample_fails_the_verdict(capsys, tmp_path, monkeypatch):
    from sdl.loader.runtime.loader import SdlLoader

    state_dict = SdlLoader.state_dict

    def skipping(self):  # every rank saves a cursor one sample past what it delivered
        return LoaderState.from_dict(state_dict(self)).advance(1).to_dict()

    monkeypatch.setattr(SdlLoader, "state_dict", skipping)
    rc, out, _ = run(capsys, *SMALL, "--out", tmp_path / "demo", "--json")
    assert rc == 1
    verdict = json.loads(out)["verdict"]
    assert not verdict["ok"] and verdict["missing"] > verdict["dropped"]  # the skipped sample is never delivered


def test_an_advance_that_skips_a_sample_fails_the_demo(capsys, tmp_path, monkeypatch):
    advance = LoaderState.advance

    def skipping(self, count):  # the cursor moves one sample further than what was consumed
        return advance(self, min(count + 1, self.remaining)) if count else self

    monkeypatch.setattr(LoaderState, "advance", skipping)
    rc, out, _ = run(capsys, *SMALL, "--out", tmp_path / "demo")
    assert rc == 1
    assert "EXACTLY-ONCE BROKEN" in out and "FAIL" in out and "PASS" not in out


def test_a_sampler_that_repeats_a_batch_fails_the_demo(capsys, tmp_path, monkeypatch):
    steps = ElasticSampler._steps

    def repeating(self, first, count, rank, order):  # step 1 delivers step 0's samples again
        batches = steps(self, first, count, rank, order)
        if first == 0 and count > 1:
            batches[1] = batches[0]
        return batches

    monkeypatch.setattr(ElasticSampler, "_steps", repeating)
    rc, out, _ = run(capsys, *SMALL, "--out", tmp_path / "demo", "--json")
    assert rc == 1
    verdict = json.loads(out)["verdict"]
    assert not verdict["ok"] and verdict["repeated"] > 0


def test_too_small_a_corpus_is_a_one_line_error(capsys, tmp_path):
    rc, _, err = run(capsys, "--max-docs", "1", "--seq-len", "4096", "--bench-steps", "0", "--out", tmp_path / "demo")
    assert rc == 1 and err.startswith("error: ")
