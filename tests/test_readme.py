"""The README's DDP example runs as written (2 gloo ranks on CPU, scaled down) and resumes exactly where it stopped:
killed right after a mid-epoch save and rerun, it trains on the same batches, rank by rank, as an uninterrupted run."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
STOP_AFTER = 10  # steps: the example saves every 5 here, so the kill comes right after the step-10 save

# Runs the example, logging the sample ids of every batch the loader hands to the loop to RECORD.<rank>.jsonl; with
# STOP > 0 every rank dies (os._exit, as after a SIGKILL) when it asks for batch STOP + 1.
RECORDER = """
import json, os, runpy, sys
from sdl.loader.runtime.loader import SdlLoader

record, stop, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
iterate, handed = SdlLoader.__iter__, [0]

def recorded(self):
    with open(f"{record}.{os.environ['RANK']}.jsonl", "a") as out:
        for batch in iterate(self):
            if stop and handed[0] == stop:
                os._exit(0)
            handed[0] += 1
            out.write(json.dumps(batch["sample_ids"].tolist()) + "\\n")
            out.flush()
            yield batch

SdlLoader.__iter__ = recorded
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


def _example() -> str:
    text = README.read_text()
    code = re.search(r"<!-- example: ddp -->\n```python\n(.*?)```", text, re.S).group(1)
    for old, new in (("seq_len=2048, stride=2048", "seq_len=16, stride=16"), ("batch_size=16", "batch_size=2"),
                     ("save_every = 2, 1000", "save_every = 2, 5")):
        assert old in code, old
        code = code.replace(old, new)
    return code


def _run(folder: Path, dataset: Path, record: str, stop: int = 0) -> list[list[list[int]]]:
    """Each rank's batches (sample ids) as handed to the example's loop."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, str(folder.parent / "recorder.py"), str(folder / record), str(stop),
                               str(folder / "train.py"), str(dataset)], cwd=folder, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1"))
             for r in range(2)]
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-5000:]
    return [[json.loads(line) for line in (folder / f"{record}.{r}.jsonl").read_text().splitlines()] for r in range(2)]


@pytest.mark.slow
def test_readme_ddp_example_resumes_exactly_where_it_stopped(token_dataset, tmp_path):
    dataset = token_dataset(num_tokens=1_000, tokens_per_shard=300, vocab_size=1000)  # 61 windows: 15 steps an epoch
    (tmp_path / "recorder.py").write_text(RECORDER)
    for name in ("whole", "split"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.py").write_text(_example())
    reference = _run(tmp_path / "whole", dataset, "ids")
    steps = len(reference[0])
    assert steps > 2 * STOP_AFTER and len(reference[1]) == steps
    for epoch in (reference[0][:steps // 2] + reference[1][:steps // 2], reference[0][steps // 2:] + reference[1][steps // 2:]):
        ids = [i for batch in epoch for i in batch]
        assert len(ids) == len(set(ids))  # two epochs, each sample once
    head = _run(tmp_path / "split", dataset, "head", stop=STOP_AFTER)
    assert (tmp_path / "split" / "checkpoint.pt").exists() and all(len(h) == STOP_AFTER for h in head)
    tail = _run(tmp_path / "split", dataset, "tail")  # a fresh process: resumes from the step-10 checkpoint
    for rank in range(2):
        assert head[rank] + tail[rank] == reference[rank], f"rank {rank} did not continue where it stopped"
