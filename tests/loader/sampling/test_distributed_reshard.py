"""Real torch.distributed (gloo): 3 processes save, `sdl reshard-ckpt` rewrites for 2, 2 processes resume; exactly once."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

# One rank of a training job: rank and world size come from torch.distributed, set up from the environment.
WORKER = textwrap.dedent("""
    import json, os, random, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from sdl.loader import TokenWindows, make_loader
    from sdl.loader.checkpoint import load_checkpoint

    dataset, steps, resume, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = make_loader(TokenWindows(dataset, seq_len=16), 4, seed=11, num_workers=0)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    if resume != "-":
        ckpt = load_checkpoint(resume.format(rank=rank))  # weights_only, numpy data allowed
        loader.load_state_dict(ckpt["loader"])
        model.load_state_dict(ckpt["model"])
    seen = []
    for step, batch in enumerate(loader):
        ids = batch["sample_ids"]
        gathered = [torch.zeros_like(ids) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, ids)  # a collective per step, as in training
        seen += ids.tolist()
        if step + 1 == steps:
            break
    if resume == "-":
        torch.save({"model": model.state_dict(), "loader": loader.state_dict(), "rng": np.random.get_state(),
                    "py_rng": random.getstate()}, os.path.join(out, f"rank_{rank}.pt"))
    with open(os.path.join(out, f"seen_{rank}.json"), "w") as handle:
        json.dump(seen, handle)
    dist.destroy_process_group()
""")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(script, world_size, args):
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output


@pytest.mark.slow
def test_three_gloo_ranks_save_two_resume_after_reshard(tmp_path, token_dataset):
    dataset = token_dataset(num_tokens=4000, tokens_per_shard=1000)  # 249 windows of 16 tokens
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    _launch(script, 3, [dataset, 6, "-", first])
    cli = subprocess.run([sys.executable, "-m", "sdl.cli.main", "reshard-ckpt", str(first / "rank_*.pt"), "--world-size", "2",
                          "--per-rank", "--out", str(second / "ckpt"), "--dataset", str(dataset), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    [stream] = json.loads(cli.stdout)["streams"]
    assert stream["samples_consumed"] == 3 * 6 * 4 and stream["check"]["matches"]
    _launch(script, 2, [dataset, 0, str(second / "ckpt" / "rank_{rank}.pt"), second])
    seen = [i for folder, world in ((first, 3), (second, 2)) for r in range(world)
            for i in json.loads((folder / f"seen_{r}.json").read_text())]
    assert len(seen) == len(set(seen)), "a sample was delivered twice"
    assert len(seen) == 249 - stream["plan"]["dropped"] and stream["plan"]["dropped"] < 2 * 4
