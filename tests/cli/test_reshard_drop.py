"""`sdl reshard-ckpt`: a world too large for the rest of the epoch (a one-line warning, a capped rank table); options it would ignore refused."""

import json
import sys
from pathlib import Path

import pytest
from sdl.loader import TokenWindows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reshard_runs import run, train  # noqa: E402


@pytest.fixture
def saved(token_dataset, tmp_path):
    windows = TokenWindows(token_dataset(num_tokens=5000, tokens_per_shard=1000), seq_len=16)  # 312 samples
    folder = tmp_path / "ckpt"
    folder.mkdir()
    train(windows, 4, 4, [5, 5, 5, 5], folder=folder)  # 80 consumed, 232 left
    return folder


def plan_rows(stdout):
    """The rows of the new-world table (the lines of the table after its title)."""
    table = stdout[stdout.index("new world"):]
    return [line for line in table.splitlines() if line.startswith("│")]


def test_a_world_with_no_step_left_warns_how_many_samples_are_dropped(capsys, saved):
    rc, stdout, err = run(capsys, saved, "--world-size", 100, "--json")  # one global batch: 100 x 4 = 400 > 232
    assert rc == 0
    plan = json.loads(stdout)["streams"][0]["plan"]
    assert (plan["steps"], plan["samples"], plan["dropped"]) == (0, 0, 232) and len(plan["ranks"]) == 100
    assert err.strip().splitlines() == [err.strip()] and err.startswith("warning: loader: the 232 samples left in epoch 0")
    assert "fewer than one global batch of 400 (100 ranks × batch 4)" in err and "all 232 are dropped" in err
    rc, stdout, err = run(capsys, saved, "--world-size", 100)
    assert rc == 0 and err.startswith("warning: ") and len(err.strip().splitlines()) == 1


def test_a_world_that_still_has_steps_does_not_warn(capsys, saved):
    rc, stdout, err = run(capsys, saved, "--world-size", 3, "--json")
    plan = json.loads(stdout)["streams"][0]["plan"]
    assert rc == 0 and err == "" and plan["steps"] == 232 // 12 and plan["dropped"] == 232 % 12


def test_the_rank_table_shows_the_first_ranks_and_counts_the_rest(capsys, saved):
    rc, stdout, _ = run(capsys, saved, "--world-size", 100)
    rows = plan_rows(stdout)
    assert rc == 0 and [row.split("│")[1].strip() for row in rows] == [str(r) for r in range(8)]
    assert "… 92 more ranks (--json lists them all)" in stdout
    rc, stdout, _ = run(capsys, saved, "--world-size", 8)
    assert rc == 0 and len(plan_rows(stdout)) == 8 and "more ranks" not in stdout


@pytest.mark.parametrize("args, expected", [
    (["--force"], "--force only applies with --dataset"),
    (["--seq-len", "8", "--stride", "8"], "--seq-len, --stride only apply with --dataset"),
    (["--overwrite"], "--overwrite only applies when writing"),
])
def test_options_that_would_be_ignored_are_refused(capsys, saved, args, expected):
    rc, _, err = run(capsys, saved, *args)
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err


def test_per_rank_files_of_a_larger_world_left_in_the_folder_are_named(capsys, saved, tmp_path):
    out = tmp_path / "new"
    assert run(capsys, saved, "--world-size", 4, "--per-rank", "--out", out)[0] == 0
    rc, _, err = run(capsys, saved, "--world-size", 2, "--per-rank", "--out", out, "--overwrite")
    assert rc == 0 and "warning: " in err and "also holds 2 rank file(s) of a larger world" in err and "rank_2.pt … rank_3.pt" in err
    assert sorted(p.name for p in out.iterdir()) == ["rank_0.pt", "rank_1.pt", "rank_2.pt", "rank_3.pt"]  # never deleted


def test_a_plan_for_a_batch_no_array_could_hold_is_computed(capsys, tmp_path):
    import torch
    from sdl.loader.sampling.state import LoaderState

    torch.save({"loader": LoaderState(fingerprint="f", num_samples=2**62 - 1, seed=0).to_dict()}, tmp_path / "x.pt")
    rc, stdout, err = run(capsys, tmp_path / "x.pt", "--world-size", 2, "--batch-size", 2**60, "--json")  # was a ValueError traceback
    assert rc == 0, err
    plan = json.loads(stdout)["streams"][0]["plan"]
    assert [r["samples"] for r in plan["ranks"]] == [2**60, 2**60] and plan["dropped"] == 2**62 - 1 - 2**61
