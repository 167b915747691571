"""The README's training examples, one per host (the DDP loop's is tests/test_readme.py), run as written (scaled down) with the real frameworks on CPU: each
run uninterrupted, and killed right after a mid-epoch checkpoint then resumed in a fresh process, over two or more
epochs; the resumed stream must equal the uninterrupted one global step by global step, every sample once an epoch."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).with_name("readme_harness.py")


def example(name: str, substitutions: tuple[tuple[str, str], ...] = ()) -> str:
    """The README block marked `<!-- example: NAME -->`, with the given scale-down substitutions (each must apply)."""
    code = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    for old, new in substitutions:
        assert old in code, old
        code = code.replace(old, new)
    return code


def run(script: Path, dataset: Path, record: Path, kill: str = "", world_size: int = 1) -> list[list[list[int]]]:
    """Run `script` on `world_size` processes (as torchrun would) under the harness; each rank's recorded batches."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, str(HARNESS), str(record), kill, str(script), str(dataset)], cwd=script.parent,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world_size),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1"))
             for r in range(world_size)]
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-5000:]
    return [[json.loads(line) for line in Path(f"{record}.{r}.jsonl").read_text().splitlines()] for r in range(world_size)]


def global_steps(ranks: list[list[list[int]]], micro_steps: int) -> list[list[int]]:
    """Group every rank's batches into global steps of `micro_steps` consecutive batches per rank."""
    count = len(ranks[0]) // micro_steps
    assert all(len(batches) == count * micro_steps for batches in ranks), "ranks handed over different step counts"
    return [sorted(x for batches in ranks for batch in batches[g * micro_steps:(g + 1) * micro_steps] for x in batch)
            for g in range(count)]


def assert_exactly_once_per_epoch(steps: list[list[int]], steps_per_epoch: int, epochs: int, num_samples: int) -> None:
    assert len(steps) == steps_per_epoch * epochs
    for e in range(epochs):
        ids = [x for step in steps[e * steps_per_epoch:(e + 1) * steps_per_epoch] for x in step]
        assert len(ids) == len(set(ids)) and set(ids) <= set(range(num_samples))
        assert num_samples - len(ids) < len(steps[0])  # only the drop_last tail is missing


@pytest.fixture
def dataset(token_dataset):
    return token_dataset(num_tokens=1_000, tokens_per_shard=300, vocab_size=1000)  # 62 windows of 16


HF = (("seq_len=2048", "seq_len=16"), ("batch_size=8, global_batch_size=64", "batch_size=4, global_batch_size=8"),
      ("save_steps=500", "save_steps=5"), ("64 // (world_size * 8)", "8 // (world_size * 4)"))


@pytest.mark.slow
def test_hf_trainer_resumes_the_exact_stream_on_another_world_size(dataset, tmp_path):
    """1 rank × 4 × 2 accumulated, uninterrupted; 2 ranks × 4 killed after checkpoint-5 (mid epoch 0, 7 steps an
    epoch); resumed on 1 rank × 4 × 2 from that checkpoint with default TrainingArguments."""
    code = example("hf", HF)
    (tmp_path / "whole").mkdir()
    (tmp_path / "split").mkdir()
    for folder in ("whole", "split"):
        (tmp_path / folder / "train.py").write_text(code)
    whole = global_steps(run(tmp_path / "whole" / "train.py", dataset, tmp_path / "whole-ids"), 2)
    assert_exactly_once_per_epoch(whole, 7, 2, 62)
    head = global_steps(run(tmp_path / "split" / "train.py", dataset, tmp_path / "head-ids", kill="hf:5", world_size=2), 1)
    tail = global_steps(run(tmp_path / "split" / "train.py", dataset, tmp_path / "tail-ids"), 2)
    assert len(head) == 5 and head + tail == whole
    state = json.loads((tmp_path / "split" / "hf-run" / "checkpoint-14" / "trainer_state.json").read_text())
    assert state["global_step"] == 14 and state["epoch"] == 2


HF_EVAL = (("seq_len=2048", "seq_len=16"), ("split_rate=0.99", "split_rate=0.8"), ("batch_size=8, shuffle=False", "batch_size=5, shuffle=False"),
           ("max_steps=1000", "max_steps=6"), ("eval_steps=500", "eval_steps=3"))


@pytest.mark.slow
def test_hf_trainer_evaluates_every_validation_sample_once_each_time(dataset, tmp_path):
    """Evaluations at steps 3 and 6 and a last evaluate(): each reads the same batches of the val split (batches of 5,
    the train loader's are of 8), which hold every validation sample, and the rows past them are the padding."""
    from sdl.loader import TokenWindows

    (script,) = scripts(tmp_path, example("hf-eval", HF_EVAL), "run")
    num_val = len(TokenWindows(dataset, seq_len=16, split="val", split_rate=0.8))
    batches = run(script, dataset, tmp_path / "ids")[0]
    evaluations = [batch for batch in batches if len(batch) == 5]
    per_evaluation = -(-num_val // 5)
    assert len(evaluations) == 3 * per_evaluation and len(batches) - len(evaluations) == 6
    first = evaluations[:per_evaluation]
    assert evaluations == first * 3
    ids = [x for batch in first for x in batch]
    assert ids[:num_val] == list(range(num_val)) and ids[num_val:] == list(range(len(ids) - num_val))


def test_every_readme_example_is_run_by_a_test():
    names = re.findall(r"<!-- example: ([\w-]+) -->", (ROOT / "README.md").read_text())
    tests = (ROOT / "tests" / "test_readme_hosts.py").read_text() + (ROOT / "tests" / "test_readme.py").read_text()
    assert names and [name for name in names if f'example("{name}"' not in tests and f"example: {name} -->" not in tests] == []


def scripts(tmp_path: Path, code: str, *names: str) -> list[Path]:
    out = []
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.py").write_text(code)
        out.append(tmp_path / name / "train.py")
    return out


@pytest.mark.slow
def test_lightning_resumes_a_mid_epoch_checkpoint_with_the_same_steps_and_samples(dataset, tmp_path):
    """max_epochs=3 uninterrupted vs killed after the step-10 checkpoint (epoch 1, 3 of its 7 steps) and fit(ckpt_path=)."""
    whole, split = scripts(tmp_path, example("lightning", (("seq_len=2048", "seq_len=16"), ("every_n_train_steps=500", "every_n_train_steps=5"))),
                           "whole", "split")
    reference = run(whole, dataset, tmp_path / "whole-ids")[0]
    assert_exactly_once_per_epoch(reference, 7, 3, 62)
    head = run(split, dataset, tmp_path / "head-ids", kill="lightning:10")[0]
    tail = run(split, dataset, tmp_path / "tail-ids")[0]
    assert len(head) == 10 and head + tail == reference  # same steps in all, same samples at each


TORCHDATA = (("seq_len=2048", "seq_len=16"), ("batch_size=16", "batch_size=4"), ("save_every = 2, 1000", "save_every = 2, 3"))


@pytest.mark.slow
def test_torchdata_resumes_with_the_same_or_another_worker_count(dataset, tmp_path):
    """Killed after its second save (step 6 of epoch 0, 15 steps an epoch, 2 workers); resumed with 2 workers (torchdata's
    own state) and with 1 worker (the sdl state taken out of it): both continue the uninterrupted stream."""
    code = example("torchdata", TORCHDATA)
    whole, same = scripts(tmp_path, code, "whole", "same")
    reference = run(whole, dataset, tmp_path / "whole-ids")[0]
    assert_exactly_once_per_epoch(reference, 15, 2, 62)
    head = run(same, dataset, tmp_path / "head-ids", kill="save:2")[0]
    assert len(head) == 6
    other = tmp_path / "other" / "train.py"
    shutil.copytree(same.parent, other.parent)  # the same checkpoint, resumed with another worker count
    other.write_text(code.replace("num_workers, checkpoint = 2,", "num_workers, checkpoint = 1,"))
    for script in (same, other):
        assert head + run(script, dataset, script.parent / "tail-ids")[0] == reference


def test_varlen_attention_example_matches_document_masked_attention(tmp_path):
    """The packed-sequence example on a real `sdl prepare` output with document starts (its assert is the check)."""
    from sdl.prepare import PrepareConfig, prepare

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(12):
        (texts / f"{i:02d}.txt").write_text(" ".join(["the data loader"] * (i * 5 + 1)))
    prepare(PrepareConfig(sources=(str(texts),), out=str(tmp_path / "docs"), tokens_per_shard=64))
    (script,) = scripts(tmp_path, example("varlen", (("seq_len=2048", "seq_len=48"),)), "run")
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "docs")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    segments = int(out.stdout.split()[0])
    assert segments > 4  # documents start inside the rows: the check compared real segment boundaries

