"""Law: a saved state whose integer field is huge (past int64's reach), negative or a bool is refused with one
CheckpointError naming the field, the same from `LoaderState.from_dict`, `loader.load_state_dict` and
`sdl reshard-ckpt` (which then writes nothing); a state sdl writes, even with a huge seed, always loads."""

import pytest
import torch
from sdl.cli.main import main
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import CheckpointError
from sdl.loader.sampling.state import LoaderState

BAD = {"huge": 2**70, "past int64": 2**63, "2**62": 2**62, "negative": -1, "bool": True}


def _top(name):
    return lambda state, value: {**state, name: value}


def _dataset(name):
    return lambda state, value: {**state, "dataset": {**state["dataset"], name: value}}


FIELDS = {name: _top(name) for name in ("num_samples", "block_size", "window_blocks", "epoch", "cursor", "world_size",
                                         "batch_size", "rank")}
FIELDS |= {f"dataset.{name}": _dataset(name) for name in ("seq_len", "stride", "tokens_per_sample")}
FIELDS["consumed"] = lambda state, value: {**state, "consumed": [[value, state["cursor"] + 5]]}  # a range's start
FIELDS["consumed end"] = lambda state, value: {**state, "consumed": [[state["cursor"] + 1, value]]}
CASES = [(field, kind) for field in FIELDS for kind in BAD] + [("seed", "bool")]  # any other integer is a seed


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    from sdl.prepare.synthetic import write_synthetic_dataset

    path = tmp_path_factory.mktemp("bounds") / "tokens"
    write_synthetic_dataset(path, num_tokens=5000, tokens_per_shard=1000, vocab_size=50257, doc_len=97)
    return TokenWindows(path, seq_len=16)


def _after_two_steps(windows, seed=0):
    """A loader two steps into its epoch, its state then, and the sample ids of its next step."""
    loader = make_loader(windows, 4, seed=seed, num_workers=0)
    batches = iter(loader)
    next(batches), next(batches)
    return loader, loader.state_dict(), next(batches)["sample_ids"].tolist()


@pytest.mark.parametrize("field, kind", CASES)
def test_an_out_of_range_integer_is_one_error_naming_the_field_from_every_reader(capsys, tmp_path, windows, field, kind):
    loader, _, _ = _after_two_steps(windows)
    good = loader.state_dict()
    tampered = FIELDS.get(field, _top(field))(good, BAD[kind])
    named = "consumed" if field.startswith("consumed") else field
    with pytest.raises(CheckpointError) as refused:
        LoaderState.from_dict(tampered)
    message = str(refused.value)
    assert f"'{named}' is {BAD[kind]!r}" in message and "corrupt or was edited" in message
    with pytest.raises(CheckpointError) as refused:
        loader.load_state_dict(tampered)
    assert str(refused.value) == message
    assert loader.state_dict() == good  # the refused load changed nothing
    torch.save({"loader": tampered}, tmp_path / "x.pt")
    for args in ([], ["--world-size", "3"], ["--world-size", "3", "--out", tmp_path / "out.pt"]):
        rc = main(["reshard-ckpt", str(tmp_path / "x.pt"), *map(str, args)])
        out, err = capsys.readouterr()
        assert rc == 1 and not out and err.startswith("error: ") and err.count("\n") == 1, err
        assert err.rstrip().endswith(message)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_a_huge_seed_is_kept_resumed_and_resharded(capsys, tmp_path, windows):
    # A seed is only hashed (the order's keys), so make_loader takes any integer, and its state must load back.
    _, state, expected = _after_two_steps(windows, seed=2**70)
    resumed = make_loader(windows, 4, seed=2**70, num_workers=0)
    resumed.load_state_dict(state)
    assert next(iter(resumed))["sample_ids"].tolist() == expected
    torch.save({"loader": state}, tmp_path / "x.pt")
    assert main(["reshard-ckpt", str(tmp_path / "x.pt"), "--world-size", "3", "--out", str(tmp_path / "out.pt")]) == 0
    assert LoaderState.from_dict(torch.load(tmp_path / "out.pt", weights_only=True)["loader"]).seed == 2**70
