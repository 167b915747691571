"""`sdl reshard-ckpt` end to end: save per rank, reshard through the real CLI, resume, every sample exactly once."""

import json
import sys
from pathlib import Path

import pytest
import torch
from sdl.loader import TokenWindows, make_loader
from sdl.loader.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reshard_runs import SEED, assert_bit_exact, run, saved, train  # noqa: E402


@pytest.fixture
def windows(token_dataset):
    return TokenWindows(token_dataset(num_tokens=5000, tokens_per_shard=1000), seq_len=16)  # 312 samples


@pytest.mark.parametrize("old_world, old_batch, steps, new_world, new_batch, per_rank", [
    (4, 4, [5, 5, 5, 5], 3, None, False),
    (4, 4, [5, 5, 5, 5], 6, None, True),
    (2, 4, [7, 7], 1, None, False),
    (4, 4, [3, 3, 3, 3], 3, 6, False),
    (4, 4, [5, 6, 4, 5], 3, None, False),  # uneven stop: merged exactly
    (4, 4, [19, 18, 19, 17], 3, None, False),  # ranks 0 and 2 ran the epoch's last step and saved epoch 1, cursor 0
])
def test_reshard_round_trip_delivers_every_sample_once(capsys, tmp_path, windows, old_world, old_batch, steps, new_world,
                                                        new_batch, per_rank):
    old = tmp_path / "old"
    old.mkdir()
    seen = train(windows, old_world, old_batch, steps, folder=old)
    out = tmp_path / ("new" if per_rank else "new.pt")
    args = [old / "rank_*.pt", "--world-size", new_world, "--out", out, "--json"]
    args += (["--batch-size", new_batch] if new_batch else []) + (["--per-rank"] if per_rank else [])
    rc, stdout, err = run(capsys, *args)
    assert rc == 0, err
    [stream] = json.loads(stdout)["streams"]
    assert stream["samples_consumed"] == len(seen) and stream["stop"] == ("even" if len(set(steps)) == 1 else "uneven (merged exactly)")
    new_file = (lambda r: out / f"rank_{r}.pt") if per_rank else (lambda r: out)
    seen += train(windows, new_world, new_batch or old_batch, [None] * new_world,
                  resume=lambda r: load_checkpoint(new_file(r))["loader"])
    assert len(seen) == len(set(seen)), "a sample was delivered twice"
    assert len(seen) == windows.__len__() - stream["plan"]["dropped"]
    assert sum(r["samples"] for r in stream["plan"]["ranks"]) == len(seen) - stream["samples_consumed"]
    old_content = load_checkpoint(old / "rank_0.pt")
    for rank in range(new_world if per_rank else 1):
        new_content = load_checkpoint(new_file(rank))
        assert new_content["loader"]["rank"] == (rank if per_rank else None)
        assert_bit_exact({k: v for k, v in new_content.items() if k != "loader"}, {k: v for k, v in old_content.items() if k != "loader"})


def test_inspect_renders_a_summary_and_the_new_ranks(capsys, tmp_path, windows):
    train(windows, 4, 4, [5, 5, 5, 5], folder=tmp_path)
    rc, stdout, _ = run(capsys, tmp_path, "--world-size", 3)
    assert rc == 0
    for text in ("loader state at loader", "312", "25.64 %", "1,280", "saved by", "new world: 3 ranks × batch 4"):
        assert text in stdout
    assert not list(tmp_path.glob("*.tmp*")) and sorted(p.name for p in tmp_path.iterdir())[0] == "rank_0.pt"


def test_the_plan_with_a_global_batch_size_counts_micro_steps_in_whole_global_steps(capsys, tmp_path, windows):
    train(windows, 4, 4, [5, 5, 5, 5], folder=tmp_path)  # 80 of 312 consumed
    rc, stdout, err = run(capsys, tmp_path, "--world-size", 2, "--global-batch-size", 16, "--json")
    assert rc == 0, err
    plan = json.loads(stdout)["streams"][0]["plan"]
    # 312 // 16 = 19 global steps per epoch, 5 done: 14 left, each 2 micro-steps of 2 ranks x 4
    assert (plan["accumulation_steps"], plan["optimizer_steps"], plan["steps"]) == (2, 14, 28)
    assert (plan["samples"], plan["dropped"]) == (224, 8)
    rc, stdout, err = run(capsys, tmp_path, "--world-size", 2, "--global-batch-size", 32, "--json")
    plan = json.loads(stdout)["streams"][0]["plan"]  # 80 = 2 global steps of 32 and 2 of the third's 4 micro-steps:
    assert (plan["steps"], plan["optimizer_steps"]) == (26, 7)  # 2 micro-steps finish it, then 6 whole ones (9 an epoch)
    rc, stdout, err = run(capsys, tmp_path, "--world-size", 2, "--global-batch-size", 32)
    assert rc == 0 and "7 optimizer steps left" in stdout, err
    rc, stdout, err = run(capsys, tmp_path, "--world-size", 3, "--global-batch-size", 16)
    assert rc == 1 and not stdout
    assert err.strip().splitlines() == [err.strip()] and "global_batch_size is 16, expected a positive multiple of world_size × batch_size = 12" in err


def test_dataset_check_refuses_a_mismatch_and_force_rebinds_it(capsys, tmp_path, windows, token_dataset):
    train(windows, 2, 4, [3, 3], folder=tmp_path)
    rc, stdout, _ = run(capsys, tmp_path, "--dataset", windows.path, "--json")
    assert rc == 0 and json.loads(stdout)["streams"][0]["check"]["matches"]
    other = token_dataset(num_tokens=6000, name="other")
    rc, _, err = run(capsys, tmp_path, "--dataset", other, "--out", tmp_path / "new.pt")
    assert rc == 1 and "does not match" in err and "the dataset gives 374" in err and "--force" in err
    assert not (tmp_path / "new.pt").exists()
    rc, stdout, _ = run(capsys, tmp_path, "--dataset", other, "--force", "--out", tmp_path / "new.pt", "--json")
    assert rc == 0 and "exactly-once again from epoch 1" in json.loads(stdout)["streams"][0]["forced"]
    loader = make_loader(TokenWindows(other, seq_len=16), 4, seed=SEED, rank=0, world_size=2, num_workers=0)
    loader.load_state_dict(load_checkpoint(tmp_path / "new.pt")["loader"])  # the new dataset accepts it


def test_in_place_rewrites_the_single_input(capsys, tmp_path, windows):
    train(windows, 1, 4, [2], folder=tmp_path)
    rc, _, err = run(capsys, tmp_path / "rank_0.pt", "--world-size", 2, "--in-place")
    assert rc == 0, err
    assert load_checkpoint(tmp_path / "rank_0.pt")["loader"]["world_size"] == 2


def _malicious(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))

    torch.save({"loader": {}, "x": Evil()}, tmp_path / "evil.pt")
    return [tmp_path / "evil.pt"]


def _two_runs(tmp_path, windows):
    train(windows, 2, 4, [2, 2], folder=tmp_path)
    torch.save({"loader": make_loader(windows, 4, seed=SEED + 1, rank=1, world_size=2, num_workers=0).state_dict()},
               tmp_path / "rank_1.pt")
    return [tmp_path / "rank_0.pt", tmp_path / "rank_1.pt"]

def _truncated(tmp_path, windows):
    saved(tmp_path, windows)
    data = (tmp_path / "rank_0.pt").read_bytes()
    (tmp_path / "rank_0.pt").write_bytes(data[:200])
    return [tmp_path / "rank_0.pt"]


def _not_a_checkpoint(tmp_path, windows):
    (tmp_path / "x.pt").write_text("not a checkpoint")
    return [tmp_path / "x.pt"]


def _no_state(tmp_path, windows):
    torch.save({"model": {}, "step": 3}, tmp_path / "x.pt")
    return [tmp_path / "x.pt"]


def _tensor_cursor(tmp_path, windows):
    state = make_loader(windows, 4, seed=SEED, num_workers=0).state_dict()
    torch.save({"loader": state | {"cursor": torch.tensor(5)}}, tmp_path / "x.pt")
    return [tmp_path / "x.pt"]


def _deep_json(tmp_path, windows):
    (tmp_path / "state.json").write_text("[" * 100_000 + "]" * 100_000)
    return [tmp_path / "state.json"]


@pytest.mark.parametrize("make, extra, expected", [
    (_tensor_cursor, [], "'cursor' is tensor(5) (Tensor), expected an integer"),
    (_deep_json, [], "state.json: JSON nested too deeply to read"),
    (saved, ["--out", "{tmp}/new.json"], "new.json is a .json output, but the checkpoint holds data JSON cannot store"),
    (lambda tmp, ds: [tmp / "missing.pt"], [], "missing.pt: no such file"),
    (_truncated, [], "not a torch checkpoint or truncated"),
    (_not_a_checkpoint, [], "not a torch checkpoint"),
    (_no_state, [], "no sdl loader state found (searched 2 dict(s) under the keys model, step)"),
    (lambda tmp, ds: _malicious(tmp), [], "needs the Python global io.open to load, which could run code"),
    (_two_runs, [], "the loader states disagree (seed: 7 vs 8)"),
    (saved, ["--world-size", "0"], "--world-size is 0, expected a positive integer"),
    (saved, ["--batch-size", "-1"], "--batch-size is -1, expected a positive integer"),
    (saved, ["--batch-size", str(2**62)], f"--batch-size is {2**62}, expected a positive integer below 2**62"),  # was "corrupt state"
    (saved, ["--out", "{tmp}/rank_0.pt"], "is an input checkpoint"),
    # the plan refuses it; it was checked only after the output was written
    (saved, ["--world-size", "3", "--global-batch-size", "16", "--out", "{tmp}/new.pt"], "global_batch_size is 16, expected a positive multiple"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, windows, make, extra, expected):
    inputs = make(tmp_path, windows)
    before = sorted(p.name for p in tmp_path.iterdir())
    extra = [a.format(tmp=tmp_path) for a in extra] or ["--out", tmp_path / "out.pt"]
    rc, _, err = run(capsys, *inputs, *extra)
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not (tmp_path / "marker").exists()


def test_a_plain_pickle_is_refused_in_one_line_without_torchs_warning(tmp_path):
    # torch.load warns about the pickle protocol before it refuses: two more stderr lines before sdl's one
    import pickle
    import subprocess

    with open(tmp_path / "p.pt", "wb") as handle:
        pickle.dump({"a": 1}, handle, protocol=5)
    done = subprocess.run([sys.executable, "-m", "sdl.cli.main", "reshard-ckpt", str(tmp_path / "p.pt")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "not a torch checkpoint" in done.stderr, done.stderr
