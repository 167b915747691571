"""A real gloo run over a Mixture: 3 ranks save at step k under one set of weights, 2 ranks resume under another
that a schedule changes again at position 120; every position once, every source continuing its pass, every
sample's content that of `source[source_id]`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sdl.loader import Mixture, TokenWindows
from sdl.loader.sampling.merge import merge_states

from tests.loader.data.test_mixture import check_passes

WORKER = Path(__file__).with_name("mixture_worker.py")


def launch_script(script: Path, world_size: int, *args: str) -> None:
    """`world_size` processes started the way torchrun starts them (RANK, WORLD_SIZE, MASTER_*); all must succeed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, OMP_NUM_THREADS="1"))
             for r in range(world_size)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out


@pytest.mark.slow
def test_three_ranks_save_two_ranks_resume_under_new_weights_and_a_schedule(token_dataset, tmp_path):
    web, code = token_dataset(num_tokens=2_000, vocab_size=1000, name="web"), token_dataset(num_tokens=600, vocab_size=1000, name="code")
    launch_script(WORKER, 3, str(web), str(code), str(tmp_path), "save", "5", "3.0")
    merged = merge_states([torch.load(tmp_path / f"rank_{r}.pt", weights_only=True)["loader"] for r in range(3)])
    torch.save({"loader": merged.to_dict()}, tmp_path / "merged.pt")
    launch_script(WORKER, 2, str(web), str(code), str(tmp_path), "resume", "0", "0.5", str(tmp_path / "merged.pt"),
                  json.dumps([[120, {"web": 1, "code": 3}]]))
    seen = [tuple(x) for phase, world in (("save", 3), ("resume", 2)) for r in range(world)
            for x in json.loads((tmp_path / f"{phase}-{r}.json").read_text())]
    assert len([x for x in seen if x[0] < 45]) == 45  # 5 steps x 3 ranks x 3 samples before the change
    assert len(seen) == 45 + (200 - 45) // 6 * 6  # then to the epoch's end, its tail dropped
    assert abs(sum(1 for k, name, _ in seen if 120 <= k < 195 and name == "code") - 0.75 * 75) <= 2  # the schedule's piece
    sources = {"web": TokenWindows(web, seq_len=8), "code": TokenWindows(code, seq_len=8)}
    check_passes(Mixture(sources, num_samples=200), [(0, k, name, i) for k, name, i in seen], seed=7)
