"""Worker for the launcher-environment test: WORLD_SIZE, LOCAL_RANK, MASTER_* set, no RANK (Lightning's launcher).

    python launcher_worker.py DATASET OUT_PREFIX

Builds the loader BEFORE the process group exists (as in a LightningModule.__init__), then joins the group
(rank = LOCAL_RANK), runs the epoch and writes the sample ids it got to OUT_PREFIX.<rank>.json.
"""

import json
import os
import sys

import torch.distributed as dist
from sdl.loader import TokenWindows, make_loader

loader = make_loader(TokenWindows(sys.argv[1], seq_len=16), batch_size=4, seed=1, num_workers=0, device="cpu")
rank = int(os.environ["LOCAL_RANK"])
dist.init_process_group("gloo", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
ids = [int(x) for batch in loader for x in batch["sample_ids"]]
with open(f"{sys.argv[2]}.{rank}.json", "w") as out:
    json.dump(ids, out)
dist.destroy_process_group()
