"""What the reshard-ckpt tests share: training runs that save per-rank checkpoints, and a bit-exact comparison."""

import random

import numpy as np
import torch
from sdl.cli.main import main
from sdl.loader import make_loader

SEED = 7


def run(capsys, *args):
    rc = main(["reshard-ckpt", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def model_and_optim():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optim = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    optim.step()
    return model.half().state_dict(), optim.state_dict()


def train(ds, world_size, batch_size, steps, folder=None, resume=None):
    """Each rank r runs steps[r] steps (None: to the end of the epoch); returns the sample ids delivered.
    With `folder`, each rank saves a training-style checkpoint rank_<r>.pt; `resume(r)` gives a rank's state."""
    seen = []
    model, optim = model_and_optim()
    for rank in range(world_size):
        loader = make_loader(ds, batch_size, seed=SEED, rank=rank, world_size=world_size, num_workers=0)
        if resume is not None:
            loader.load_state_dict(resume(rank))
        for step, batch in enumerate(loader):
            seen += batch["sample_ids"].tolist()
            if steps[rank] is not None and step + 1 == steps[rank]:
                break
        if folder is not None:
            rng = {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}
            torch.save({"model": model, "optim": optim, "loader": loader.state_dict(), "rng": rng, "step": steps[rank]},
                       folder / f"rank_{rank}.pt")
    return seen


def assert_bit_exact(new, old):
    if isinstance(old, torch.Tensor):
        assert new.dtype == old.dtype and torch.equal(new, old)
    elif isinstance(old, np.ndarray):
        assert new.dtype == old.dtype and np.array_equal(new, old)
    elif isinstance(old, dict):
        assert list(new) == list(old)
        for key in old:
            assert_bit_exact(new[key], old[key])
    elif isinstance(old, (list, tuple)):
        assert type(new) is type(old) and len(new) == len(old)
        for a, b in zip(new, old):
            assert_bit_exact(a, b)
    else:
        assert new == old


def saved(tmp_path, windows):
    train(windows, 1, 4, [1], folder=tmp_path)
    return [tmp_path / "rank_0.pt"]
