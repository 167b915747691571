"""A training-style worker over a Mixture for the gloo test: run with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set.

    python mixture_worker.py WEB CODE OUTDIR PHASE STEPS WEB_WEIGHT [STATE_FILE [SCHEDULE_JSON]]

Takes STEPS batches (PHASE "save", then saves the loader state to OUTDIR/rank_<r>.pt) or runs to the end of the
epoch from STATE_FILE (PHASE "resume"), the mixture's weights changed by SCHEDULE_JSON ([[position, weights], ...])
when given. Every sample's content is checked against `source[source_id]`; the
delivered (position, source name, source id) go to OUTDIR/<phase>-<r>.json.
"""

import json
import sys

import torch
import torch.distributed as dist
from sdl.loader import Mixture, TokenWindows, make_loader


def main(web: str, code: str, outdir: str, phase: str, steps: int, web_weight: float, state_file: str | None = None,
         schedule: str | None = None) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mixture = Mixture({"web": TokenWindows(web, seq_len=8), "code": TokenWindows(code, seq_len=8)},
                      weights={"web": web_weight, "code": 1.0}, num_samples=200, schedule=json.loads(schedule or "[]"))
    loader = make_loader(mixture, batch_size=3, seed=7, shuffle=False, num_workers=1)  # topology from dist
    if state_file:
        loader.load_state_dict(torch.load(state_file, weights_only=True)["loader"])
    seen = []
    for step, batch in enumerate(loader):
        for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
            assert torch.equal(batch["input_ids"][row], mixture.sources[s][i]["input_ids"].to(batch["input_ids"].dtype))
            seen.append([int(batch["sample_ids"][row]), mixture.names[s], i])
        if phase == "save" and step + 1 == steps:
            break
    if phase == "save":
        torch.save({"loader": loader.state_dict()}, f"{outdir}/rank_{rank}.pt")
    with open(f"{outdir}/{phase}-{rank}.json", "w") as handle:
        json.dump(seen, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5], int(sys.argv[5]), float(sys.argv[6]), *sys.argv[7:9])
