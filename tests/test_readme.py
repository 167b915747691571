"""The README's DDP example runs as written (2 gloo ranks on CPU, scaled down), and resumes from its checkpoint."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    code = re.search(r"<!-- example: ddp -->\n```python\n(.*?)```", text, re.S).group(1)
    for old, new in (("seq_len=2048, stride=2048", "seq_len=16, stride=16"), ("batch_size=16", "batch_size=2"),
                     ("save_every = 2, 1000", "save_every = 2, 5")):
        assert old in code, old
        code = code.replace(old, new)
    return code


def _run(script: Path, dataset: Path, cwd: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, str(script), str(dataset)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1"))
             for r in range(2)]
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out


@pytest.mark.slow
def test_readme_ddp_example_trains_checkpoints_and_resumes(token_dataset, tmp_path):
    dataset = token_dataset(num_tokens=2_000, vocab_size=1000)
    script = tmp_path / "train.py"
    script.write_text(_example())
    _run(script, dataset, tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()
    _run(script, dataset, tmp_path)  # resumes from the checkpoint: the loop starts at the saved epoch
