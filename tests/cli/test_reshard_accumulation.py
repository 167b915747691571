"""`sdl reshard-ckpt` of a run with gradient accumulation: the plan takes the global batch the states record unless
--global-batch-size changes it, and a loader resumed with that global batch runs exactly the plan."""

import json
import sys
from pathlib import Path

import pytest
import torch
from sdl.loader import TokenWindows, make_loader
from sdl.loader.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reshard_runs import SEED, run  # noqa: E402

G = 32  # the saved run's global batch: 2 ranks x 4 x 4 micro-steps


@pytest.fixture
def windows(token_dataset):
    return TokenWindows(token_dataset(num_tokens=5000, tokens_per_shard=1000), seq_len=16)  # 312 samples: 9 steps of 32


def loaders(windows, world_size, batch_size, global_batch_size):
    return [make_loader(windows, batch_size, seed=SEED, rank=rank, world_size=world_size, num_workers=0,
                        global_batch_size=global_batch_size) for rank in range(world_size)]


@pytest.fixture
def saved(tmp_path, windows):
    """Per-rank checkpoints after 10 micro-steps each: 80 samples, two and a half global steps of G."""
    seen, folder = [], tmp_path / "ckpt"
    folder.mkdir()
    for rank, loader in enumerate(loaders(windows, 2, 4, G)):
        for _, batch in zip(range(10), loader):
            seen += batch["sample_ids"].tolist()
        torch.save({"loader": loader.state_dict()}, folder / f"rank_{rank}.pt")
    return folder, seen


def resume(windows, world_size, batch_size, global_batch_size, state):
    """Every new rank from `state` to the end of the epoch: the sample ids and each rank's micro-steps."""
    seen, steps = [], []
    for loader in loaders(windows, world_size, batch_size, global_batch_size):
        loader.load_state_dict(state)
        batches = [batch["sample_ids"].tolist() for batch in loader]
        seen, steps = seen + sum(batches, []), steps + [len(batches)]
    return seen, steps


def test_the_plan_takes_the_recorded_global_batch_and_the_resumed_loader_runs_it(capsys, tmp_path, windows, saved):
    folder, seen = saved
    rc, stdout, err = run(capsys, folder, "--world-size", 1, "--out", tmp_path / "new.pt", "--json")
    assert rc == 0, err
    [stream] = json.loads(stdout)["streams"]
    plan = stream["plan"]
    # 9 global steps of 32 an epoch, 2.5 done: 208 samples in 52 micro-steps of 1 x 4, 8 to a global step, the first
    # finishing the started one (planned without G: 58 steps of 4, 24 samples more than the resumed loader delivers)
    assert (plan["accumulation_steps"], plan["steps"], plan["optimizer_steps"], plan["samples"], plan["dropped"]) == (8, 52, 7, 208, 24)
    assert stream["saved_global_batch_size"] == plan["global_batch_size"] == G and "global_batch_change" not in stream
    state = load_checkpoint(tmp_path / "new.pt")["loader"]
    assert (state["world_size"], state["batch_size"], state["global_batch_size"]) == (1, 4, G)
    rest, steps = resume(windows, 1, 4, G, state)
    assert steps == [plan["steps"]] and len(rest) == plan["samples"]
    assert len(set(seen + rest)) == len(seen + rest) == 9 * G


def test_a_world_that_does_not_divide_the_recorded_global_batch_is_refused_in_one_line(capsys, tmp_path, saved):
    folder, _ = saved
    rc, stdout, err = run(capsys, folder, "--world-size", 3, "--out", tmp_path / "new.pt")
    assert rc == 1 and not stdout and not (tmp_path / "new.pt").exists()
    assert err == ("error: the loader state records global_batch_size=32 (its run's global batch, with gradient accumulation), "
                   "which 3 rank(s) × batch size 4 = 12 does not divide into whole micro-steps; choose a --world-size and "
                   "--batch-size whose product divides 32, or pass --global-batch-size with a multiple of 12 to change it\n")


def test_another_global_batch_is_a_change_the_summary_states_and_the_rewrite_records(capsys, tmp_path, windows, saved):
    folder, seen = saved
    args = ["--world-size", 1, "--batch-size", 8, "--global-batch-size", 64]
    rc, stdout, err = run(capsys, folder, *args, "--out", tmp_path / "new.pt", "--json")
    assert rc == 0, err
    [stream] = json.loads(stdout)["streams"]
    plan = stream["plan"]
    assert stream["global_batch_change"].startswith("the global batch changes from 32 (saved) to 64: the rest of epoch 0 is cut")
    # 4 global steps of 64 an epoch (256 samples), 80 done: 176 in 22 micro-steps of 8, 8 to a global step
    assert (plan["global_batch_size"], plan["accumulation_steps"], plan["steps"], plan["optimizer_steps"]) == (64, 8, 22, 3)
    state = load_checkpoint(tmp_path / "new.pt")["loader"]
    assert (state["world_size"], state["batch_size"], state["global_batch_size"]) == (1, 8, 64)
    rest, steps = resume(windows, 1, 8, 64, state)
    assert steps == [plan["steps"]] and len(rest) == plan["samples"] == 176
    assert len(set(seen + rest)) == len(seen + rest) == 4 * 64
    rc, stdout, _ = run(capsys, folder, *args)
    assert rc == 0 and "the global batch changes from 32 (saved) to 64" in stdout.replace("\n", " ")
