"""A training-style worker for the multi-process tests: run with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set.

    python dist_worker.py DATASET OUTDIR PHASE STEPS [STATE_FILE]

Phase "save": take STEPS batches, save {"model", "loader"} to OUTDIR/rank_<r>.pt. Phase "resume": load the
loader state from STATE_FILE, run to the end of the epoch. Either way the sample ids seen go to
OUTDIR/<phase>-ids-<r>.json, after checking over gloo that every rank ran the same number of steps.
"""

import json
import sys

import torch
import torch.distributed as dist
from sdl.loader import TokenWindows, make_loader


def main(dataset: str, outdir: str, phase: str, steps: int, state_file: str | None = None) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = make_loader(TokenWindows(dataset, seq_len=16), batch_size=3, seed=11, num_workers=1)  # topology from dist
    if state_file:
        loader.load_state_dict(torch.load(state_file, weights_only=True)["loader"])
    seen = []
    for batch in loader:
        seen += batch["sample_ids"].tolist()
        if phase == "save" and len(seen) == steps * 3:
            break
    counts = [torch.zeros(1) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([float(len(seen))]))
    assert len({float(c) for c in counts}) == 1, "ranks ran different numbers of steps"
    if phase == "save":
        torch.save({"model": torch.arange(10.0) * rank, "loader": loader.state_dict()}, f"{outdir}/rank_{rank}.pt")
    with open(f"{outdir}/{phase}-ids-{rank}.json", "w") as handle:
        json.dump(seen, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
