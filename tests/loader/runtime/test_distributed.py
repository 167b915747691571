"""Real torch.distributed (gloo) runs: 3 ranks save at step k, 2 ranks resume, every sample exactly once; 2 ranks × 4
and 1 rank × 4 × 2 micro-steps (global_batch_size=8) give the same global batches across epochs and a resume."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sdl.loader import TokenWindows
from sdl.loader.sampling.merge import merge_states

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(world_size: int, *args: str, worker: Path = WORKER) -> None:
    """Start `world_size` worker processes the way torchrun would (RANK, WORLD_SIZE, MASTER_*), wait for all."""
    port = str(_free_port())
    procs = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(worker), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out


@pytest.mark.slow
def test_three_ranks_save_two_ranks_resume_exactly_once(token_dataset, tmp_path):
    dataset = token_dataset(num_tokens=6_000, vocab_size=1000)
    launch(3, str(dataset), str(tmp_path), "save", "7")
    states = [torch.load(tmp_path / f"rank_{r}.pt", weights_only=True)["loader"] for r in range(3)]
    merged = {"loader": merge_states(states).to_dict()}
    torch.save(merged, tmp_path / "merged.pt")
    launch(2, str(dataset), str(tmp_path), "resume", "0", str(tmp_path / "merged.pt"))
    ids = {phase: [x for r in range(world) for x in json.loads((tmp_path / f"{phase}-ids-{r}.json").read_text())]
           for phase, world in (("save", 3), ("resume", 2))}
    assert len(ids["save"]) == 3 * 7 * 3  # 3 ranks x 7 steps x batch 3
    seen = ids["save"] + ids["resume"]
    assert len(seen) == len(set(seen))
    num_samples = len(TokenWindows(dataset, seq_len=16))
    assert num_samples - len(seen) < 2 * 3  # all but the final partial global batch of the resumed run


ACCUM_WORKER = Path(__file__).with_name("accum_worker.py")


def _global_batches(micro_steps, accumulate):
    return [sorted(sum(micro_steps[k:k + accumulate], [])) for k in range(0, len(micro_steps), accumulate)]


@pytest.mark.slow
def test_two_ranks_and_one_rank_accumulating_give_the_same_global_batches(token_dataset, tmp_path):
    dataset = str(token_dataset(num_tokens=1_000, vocab_size=1000))  # 62 windows: 7 global steps of 8 an epoch
    launch(2, str(dataset), str(tmp_path / "two.json"), "-1", worker=ACCUM_WORKER)
    launch(1, str(dataset), str(tmp_path / "head.json"), "9", "", str(tmp_path / "state.pt"), worker=ACCUM_WORKER)  # 4.5 global steps
    launch(1, str(dataset), str(tmp_path / "tail.json"), "-1", str(tmp_path / "state.pt"), worker=ACCUM_WORKER)
    two, head, tail = (json.loads((tmp_path / name).read_text()) for name in ("two.json", "head.json", "tail.json"))
    assert (two["accumulate"], head["accumulate"], two["len"], head["len"]) == (1, 2, 7, 14)
    reference = _global_batches(two["micro_steps"], 1)
    assert len(reference) == 14 and _global_batches(head["micro_steps"] + tail["micro_steps"], 2) == reference
    for epoch in (reference[:7], reference[7:]):
        ids = sum(epoch, [])
        assert len(ids) == len(set(ids)) == 56  # exactly once; the 6-sample tail dropped
