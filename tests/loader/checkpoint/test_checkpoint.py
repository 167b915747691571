"""Loader states inside checkpoints: found anywhere, loaded without running code, rewritten leaving the rest bit-exact."""

import json
import os
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch
from sdl.loader.checkpoint import (
    check_dataset,
    find_states,
    format_key,
    load_checkpoint,
    read_checkpoint,
    read_checkpoints,
    rebind_state,
    replace_states,
    resolve_inputs,
    rewrite_checkpoint,
)
from sdl.loader.errors import CheckpointError, ConfigError, InputError
from sdl.loader.sampling.sampler import ElasticSampler
from sdl.loader.sampling.state import LoaderState


def _state(rank=0, world_size=2, steps=0, seed=0, num_samples=100):
    sampler = ElasticSampler(num_samples, 4, rank=rank, world_size=world_size, seed=seed, fingerprint="ds")
    batches = iter(sampler)
    for _ in range(steps):
        next(batches)
    return sampler.state_dict()


class Marker:
    """Unpickling this would create a file: what a malicious checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_numpy_and_python_rng_states_load_without_unpickling_code(tmp_path):
    content = {"loader": _state(), "np_rng": np.random.get_state(), "py_rng": random.getstate(),
               "gen": np.random.default_rng(0).bit_generator.state, "arr": np.arange(6, dtype=np.uint16).reshape(2, 3),
               "scalar": np.float32(0.5), "dtype": np.dtype("i8"), "torch_rng": torch.get_rng_state()}
    torch.save(content, tmp_path / "ckpt.pt")
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["py_rng"] == random.getstate()
    assert np.array_equal(loaded["np_rng"][1], content["np_rng"][1]) and loaded["np_rng"][1].dtype == np.uint32
    assert loaded["arr"].dtype == np.uint16 and loaded["scalar"] == np.float32(0.5) and loaded["dtype"] == np.dtype("i8")
    assert torch.equal(loaded["torch_rng"], content["torch_rng"])


def test_a_pickle_that_needs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"loader": _state(), "evil": Marker(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"needs the Python global .*open.*never unpickles code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_missing_truncated_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"loader": _state(), "w": torch.zeros(1000)}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a torch checkpoint or truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "bad.json")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("random.pt", "empty.pt"):  # torch's reason, without its advice about the weights_only default
        with pytest.raises(CheckpointError, match="not a torch checkpoint or truncated") as raised:
            load_checkpoint(tmp_path / name)
        assert "weights_only` argument" not in str(raised.value) and "\n" not in str(raised.value)


def test_one_path_as_a_string_and_a_folder_given_as_a_file(tmp_path):
    from sdl.loader.checkpoint import read_checkpoints

    torch.save({"loader": _state()}, tmp_path / "one.pt")
    assert [c.path for c in read_checkpoints(str(tmp_path / "one.pt"))] == [tmp_path / "one.pt"]  # not its characters
    with pytest.raises(InputError, match="is a folder; expected a checkpoint file"):
        load_checkpoint(tmp_path)


def test_a_corrupt_state_inside_a_checkpoint_names_the_file_and_key(tmp_path):
    from sdl.loader.checkpoint import read_checkpoint

    torch.save({"loader": {**_state(), "cursor": "24"}}, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt \[loader\]: loader state field 'cursor' is '24'"):
        read_checkpoint(tmp_path / "edited.pt")


def test_states_are_found_under_any_key_and_inside_lists():
    state = _state()
    content = {"model": {"w": torch.zeros(2)}, "loaders": [{"train": state}], "extra": OrderedDict(dl={"inner": state})}
    found = find_states(content)
    assert [format_key(key) for key, _ in found] == ["loaders[0].train", "extra.dl.inner"]
    assert format_key(()) == "<root>" and find_states(state) == [((), state)]


def test_state_inside_a_torchdata_stateful_dataloader_is_found(token_dataset):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    from sdl.loader.data.windows import TokenWindows

    ds = TokenWindows(token_dataset(num_tokens=2000), seq_len=16)
    sampler = ElasticSampler(len(ds), 4, world_size=2, fingerprint=ds.identity)
    loader = stateful.StatefulDataLoader(ds, batch_sampler=sampler, collate_fn=lambda b: b, num_workers=0)
    batches = iter(loader)
    next(batches), next(batches)
    [(key, value)] = find_states({"dataloader": loader.state_dict()})
    assert key == ("dataloader", "_index_sampler_state") and LoaderState.from_dict(value).cursor == 16


def test_no_state_found_says_which_keys_were_searched(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "optim": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"no sdl loader state found \(searched 3 dict\(s\) under the keys model, optim\)"):
        read_checkpoint(tmp_path / "ckpt.pt")


def test_inputs_resolve_from_files_folders_and_globs(tmp_path):
    for rank in (0, 1, 2, 10):
        (tmp_path / f"rank_{rank}.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    expected = [tmp_path / f"rank_{r}.pt" for r in (0, 1, 2, 10)]
    assert resolve_inputs([tmp_path]) == expected
    assert resolve_inputs([str(tmp_path / "rank_*.pt")]) == expected
    with pytest.raises(InputError, match="matches no files"):
        resolve_inputs([str(tmp_path / "step_*.pt")])


def test_replace_states_shares_every_untouched_object():
    model = {"w": torch.randn(3)}
    content = {"model": model, "train": {"loader": _state()}, "rng": [1, 2]}
    new = replace_states(content, {("train", "loader"): {"x": 1}})
    assert new["model"] is model and new["rng"] is content["rng"] and new["train"]["loader"] == {"x": 1}
    assert content["train"]["loader"]["format"] == "sdl-loader-state"  # the original is untouched


def test_rewrite_keeps_everything_else_bit_exact_and_refuses_unsafe_outputs(tmp_path):
    model = {"w": torch.randn(4, 4, dtype=torch.bfloat16), "b": torch.arange(3, dtype=torch.int8)}
    for rank in range(2):
        torch.save({"model": model, "loader": _state(rank, steps=3), "np_rng": np.random.get_state()}, tmp_path / f"rank_{rank}.pt")
    checkpoints = read_checkpoints([tmp_path / "rank_0.pt", tmp_path / "rank_1.pt"])
    result = rewrite_checkpoint(checkpoints, world_size=3, out=tmp_path / "new.pt")
    new = load_checkpoint(tmp_path / "new.pt")
    for name, tensor in model.items():
        assert torch.equal(new["model"][name], tensor) and new["model"][name].dtype == tensor.dtype
    assert new["loader"]["world_size"] == 3 and new["loader"]["cursor"] == 24 and result.written == (tmp_path / "new.pt",)
    with pytest.raises(InputError, match="already exists"):
        rewrite_checkpoint(checkpoints, world_size=3, out=tmp_path / "new.pt")
    with pytest.raises(ConfigError, match="is an input checkpoint"):
        rewrite_checkpoint(checkpoints, world_size=3, out=tmp_path / "rank_0.pt", overwrite=True)
    with pytest.raises(ConfigError, match="--in-place rewrites one input"):
        rewrite_checkpoint(checkpoints, world_size=3, in_place=True)
    with pytest.raises(ConfigError, match=r"--in-place rewrites its input file into itself, and --out .*new2.pt names another file"):
        rewrite_checkpoint(checkpoints[:1], world_size=3, in_place=True, out=tmp_path / "new2.pt")
    with pytest.raises(ConfigError, match="expected a positive integer"):
        rewrite_checkpoint(checkpoints, world_size=0, out=tmp_path / "zero.pt")
    assert not (tmp_path / "zero.pt").exists()


def test_per_rank_json_rewrite_sets_each_rank(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps(_state(steps=2)))
    result = rewrite_checkpoint(read_checkpoints([tmp_path / "state.json"]), world_size=3, batch_size=2,
                                out=tmp_path / "out", per_rank=True)
    assert [p.name for p in result.written] == ["rank_0.json", "rank_1.json", "rank_2.json"]
    states = [LoaderState.from_dict(json.loads(p.read_text())) for p in result.written]
    assert [s.rank for s in states] == [0, 1, 2] and {(s.cursor, s.world_size, s.batch_size) for s in states} == {(16, 3, 2)}
    assert not any(name.startswith(".") for name in os.listdir(tmp_path / "out"))  # no temporaries left


def test_dataset_check_explains_mismatches_and_rebind_moves_the_state(token_dataset):
    from sdl.loader.data.windows import TokenWindows

    path = token_dataset(num_tokens=3000)
    ds = TokenWindows(path, seq_len=16)
    state = ElasticSampler(len(ds), 4, fingerprint=ds.identity, dataset_info=ds.describe()).state()
    assert check_dataset(state, path).matches
    other = check_dataset(state, path, seq_len=32)
    assert not other.matches and "seq_len: saved 16, checking with 32" in other.problems[0]
    assert "the state covers 187 samples, the dataset gives 186" in other.problems[1]
    changed = token_dataset(num_tokens=3001, name="other")
    moved = check_dataset(state, changed)
    assert moved.problems == (f"fingerprint {moved.fingerprint} differs from the state's {state.fingerprint}: the dataset's files "
                              "differ from those the state was saved on (re-prepared, modified, or another dataset)",)
    rebound = rebind_state(state, moved)
    assert rebound.fingerprint == moved.fingerprint and rebound.dataset["path"] == str(changed)


def test_damaged_checkpoints_are_checkpoint_errors(tmp_path):
    """Bytes cut or flipped anywhere in a real training checkpoint: always a CheckpointError, never another exception."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optim = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optim.step()
    torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "rng": np.random.get_state(),
                "loader": LoaderState(fingerprint="f", num_samples=10, seed=0).to_dict()}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    rng = random.Random(0)
    for case in range(150):
        damaged = bytearray(data[:rng.randrange(len(data))] if case % 3 == 0 else data)
        for _ in range(rng.randint(1, 6) if case % 3 else 0):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        (tmp_path / "bad.pt").write_bytes(bytes(damaged))
        try:
            load_checkpoint(tmp_path / "bad.pt")
        except CheckpointError as exc:
            assert str(exc).startswith(f"{tmp_path / 'bad.pt'}")


def test_a_programming_error_in_loading_is_not_reported_as_a_damaged_file(tmp_path, monkeypatch):
    torch.save({"x": 1}, tmp_path / "good.pt")

    def load_without_weights_only(path, map_location=None):  # a torch.load that lacks an argument sdl passes
        return {"x": 1}

    monkeypatch.setattr(torch, "load", load_without_weights_only)
    with pytest.raises(TypeError, match="weights_only"):  # was: "not a torch checkpoint or truncated"
        load_checkpoint(tmp_path / "good.pt")
