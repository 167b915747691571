"""Worker for the global-batch test (run with RANK/WORLD_SIZE/MASTER_* set, as torchrun would):

    python accum_worker.py DATASET OUT.json MICRO_STEPS [STATE_IN] [STATE_OUT]

make_loader(batch_size=4, global_batch_size=8) with the topology from the gloo group; runs MICRO_STEPS micro-steps
(-1: to the end of epoch 1) from STATE_IN, gathers every rank's sample ids per micro-step, and rank 0 writes them
(and the loader state to STATE_OUT).
"""

import json
import sys

import torch
import torch.distributed as dist
from sdl.loader import TokenWindows, make_loader


def main(dataset: str, out: str, micro_steps: int, state_in: str = "", state_out: str = "") -> None:
    dist.init_process_group("gloo")
    loader = make_loader(TokenWindows(dataset, seq_len=16), batch_size=4, global_batch_size=8, seed=3, num_workers=0)
    if state_in:
        loader.load_state_dict(torch.load(state_in, weights_only=True))
    steps = []
    for epoch in range(loader.epoch, 2):
        loader.set_epoch(epoch)
        for batch in loader:
            ids = [torch.zeros(4, dtype=torch.int64) for _ in range(dist.get_world_size())]
            dist.all_gather(ids, batch["sample_ids"])
            steps.append(torch.cat(ids).tolist())
            if len(steps) == micro_steps:
                break
        if len(steps) == micro_steps:
            break
    if dist.get_rank() == 0:
        with open(out, "w") as handle:
            json.dump({"micro_steps": steps, "accumulate": loader.accumulation_steps, "len": len(loader)}, handle)
        if state_out:
            torch.save(loader.state_dict(), state_out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
