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


def test_a_world_size_without_a_rank_is_an_error_not_rank_zero(clean_env):
    with pytest.raises(ConfigError, match="world_size=2 was given without rank=.*every process would read as rank 0"):
        find_topology(None, 2)
    assert find_topology(None, 1)[:2] == (0, 1)  # one rank: rank 0 is the only one
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    assert find_topology(None, 2)[:2] == (1, 2)  # the environment names the rank


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


@pytest.mark.slow
def test_under_lightnings_launcher_environment_two_processes_split_the_epoch(token_dataset, tmp_path):
    """WORLD_SIZE=2 and LOCAL_RANK, no RANK, loader built before the group: each process reads its own half."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    dataset = token_dataset(num_tokens=1_000, vocab_size=1000)  # 62 windows: 7 steps of 8, 6 dropped
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE")}
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("launcher_worker.py")), str(dataset), str(tmp_path / "ids")],
                              env=dict(env, WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                                       OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    for proc in procs:
        out = proc.communicate(timeout=240)[0]
        assert proc.returncode == 0, out
    ids = [json.loads((tmp_path / f"ids.{r}.json").read_text()) for r in range(2)]
    assert len(ids[0]) == len(ids[1]) == 28 and not set(ids[0]) & set(ids[1])  # no sample read by both ranks
