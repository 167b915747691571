"""Rank and world size: resolved from Lightning's launcher environment, checked against the real process group."""

import pytest
import torch.distributed as dist
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import ConfigError
from sdl.loader.runtime.topology import find_topology, resolve_topology


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_lightning_launcher_environment_gives_each_process_its_rank(clean_env):
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("LOCAL_RANK", "1")  # Lightning's launcher sets no RANK
    assert resolve_topology(None, None) == (1, 2)
    clean_env.setenv("NODE_RANK", "1")
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    clean_env.setenv("WORLD_SIZE", "4")
    assert resolve_topology(None, None) == (3, 4)


def test_an_unknowable_rank_is_an_error_not_rank_zero(clean_env):
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 is set but not RANK.*rank= and world_size="):
        find_topology(None, None)


def test_topology_source_is_recorded(clean_env):
    assert find_topology(None, None) == (0, 1, "the default (no process group, no RANK/WORLD_SIZE)")
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "3")
    assert find_topology(None, None)[:2] == (1, 3) and "RANK/WORLD_SIZE" in find_topology(None, None)[2]


def test_a_loader_that_disagrees_with_the_process_group_refuses_to_iterate(token_dataset, tmp_path, clean_env):
    dataset = TokenWindows(token_dataset(num_tokens=3_000, vocab_size=1000), seq_len=16)
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("LOCAL_RANK", "1")
    loader = make_loader(dataset, batch_size=2, num_workers=0, device="cpu")  # built before the group exists
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        with pytest.raises(ConfigError, match=r"rank 1 of 2 \(from the WORLD_SIZE/LOCAL_RANK environment variables\), but "
                                              r"torch.distributed says rank 0 of 1.*after init_process_group"):
            next(iter(loader))
        agreeing = make_loader(dataset, batch_size=2, num_workers=0, device="cpu")  # built after: from the group
        assert (agreeing.sampler.rank, agreeing.sampler.world_size) == (0, 1) and next(iter(agreeing))["input_ids"].shape == (2, 16)
    finally:
        dist.destroy_process_group()
