"""SdlTrainer's evaluation over an sdl eval loader: every sample once per evaluation, none of the rows that pad the last
step, the same samples at every evaluation, and `eval_loss` the mean over samples (on one rank and on two, with a rank
whose last batch is padding alone)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import ConfigError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

SEQ_LEN, VOCAB = 16, 1000


class RowLoss(torch.nn.Module):
    """Loss: the mean over rows of a fixed function of each row (its first token's weight); records the rows it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.0, 1.0, VOCAB))
        self.seen: list[int] = []

    def forward(self, input_ids, labels):
        self.seen += (input_ids[:, 0] // SEQ_LEN).tolist()  # the synthetic dataset's token at p is p % VOCAB: row = window
        return {"loss": self.weight[input_ids[:, 0]].mean()}


def exact_mean(num_windows: int) -> float:
    """The mean over samples of RowLoss's per-row loss: window i starts with token 16·i."""
    weight = torch.linspace(0.0, 1.0, VOCAB)
    return float(weight[torch.arange(num_windows) * SEQ_LEN % VOCAB].double().mean())


def val_windows(token_dataset, num_windows: int) -> Path:
    return token_dataset(num_tokens=num_windows * SEQ_LEN + 1, tokens_per_shard=50, vocab_size=VOCAB, name="val")


def trainer_with(tmp_path, eval_loader, **kwargs):
    from sdl.loader.integrations.hf import SdlTrainer

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    train = make_loader(eval_loader.dataset, batch_size=2, num_workers=0, rank=0, world_size=1, device="cpu")
    return SdlTrainer(model=RowLoss(), args=args, train_loader=train, eval_loader=eval_loader, **kwargs)


@pytest.mark.parametrize("num_windows, batch_size, shuffle, workers", [(13, 4, False, 0), (12, 4, True, 0), (3, 8, False, 0),
                                                                      (13, 4, True, 2)])
def test_every_sample_is_evaluated_once_and_eval_loss_is_their_mean(token_dataset, tmp_path, num_windows, batch_size, shuffle,
                                                                    workers):
    loader = make_loader(TokenWindows(val_windows(token_dataset, num_windows), seq_len=SEQ_LEN), batch_size=batch_size,
                         shuffle=shuffle, drop_last=False, seed=0, num_workers=workers, rank=0, world_size=1, device="cpu")
    trainer = trainer_with(tmp_path, loader)
    first = trainer.evaluate()
    seen, trainer.model.seen = trainer.model.seen, []
    assert sorted(seen) == list(range(num_windows))
    assert first["eval_loss"] == pytest.approx(exact_mean(num_windows), rel=1e-6)
    second = trainer.evaluate()  # the same samples, in the same order
    assert trainer.model.seen == seen and second["eval_loss"] == first["eval_loss"]


def test_evaluation_starts_where_the_loader_stood_when_given(token_dataset, tmp_path):
    loader = make_loader(TokenWindows(val_windows(token_dataset, 13), seq_len=SEQ_LEN), batch_size=4, shuffle=False,
                         drop_last=False, seed=0, num_workers=0, rank=0, world_size=1, device="cpu")
    trainer = trainer_with(tmp_path, loader)
    next(iter(loader))  # the loader moved on: the next evaluation still reads the whole epoch
    trainer.evaluate()
    assert sorted(trainer.model.seen) == list(range(13))


SCRIPT = """
import json, sys
import torch, transformers
sys.path.insert(0, {tests!r})
from test_hf_eval import RowLoss
from sdl.loader import TokenWindows, make_loader
from sdl.loader.integrations.hf import SdlTrainer

args = transformers.TrainingArguments(output_dir="run", report_to="none", use_cpu=True)
loader = make_loader(TokenWindows({path!r}, seq_len={seq_len}), batch_size=4, shuffle=False, drop_last=False, seed=0,
                     num_workers=0)
train = make_loader(TokenWindows({path!r}, seq_len={seq_len}), batch_size=2, seed=0, num_workers=0)
trainer = SdlTrainer(model=RowLoss(), args=args, train_loader=train, eval_loader=loader)
metrics = trainer.evaluate()
with open(f"rank{{args.process_index}}.json", "w") as out:
    json.dump({{"loss": metrics["eval_loss"], "seen": trainer.model.seen}}, out)
torch.distributed.barrier()  # then leave the group together: a gloo group alive at exit may abort the process
torch.distributed.destroy_process_group()
"""


@pytest.mark.parametrize("num_windows", [9, 13])
def test_two_ranks_evaluate_every_sample_once_and_agree_on_the_mean(token_dataset, tmp_path, num_windows):
    """9 windows, 2 ranks × 4: the last step holds one real row, on rank 0; rank 1 runs its padding with weight 0."""
    import json

    path = val_windows(token_dataset, num_windows)
    (tmp_path / "eval.py").write_text(SCRIPT.format(tests=str(Path(__file__).parent), path=str(path), seq_len=SEQ_LEN))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, "eval.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1"))
             for r in range(2)]
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    if num_windows == 9:  # rank 1's last batch: padding alone, run whole (with weight 0)
        assert len(ranks[1]["seen"]) == 8
        ranks[1]["seen"] = ranks[1]["seen"][:4]
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(num_windows))
    assert ranks[0]["loss"] == ranks[1]["loss"] == pytest.approx(exact_mean(num_windows), rel=1e-6)


def test_sdl_data_for_the_trainers_eval_dataset_or_beside_an_eval_loader_is_refused(token_dataset, tmp_path):
    from sdl.loader.integrations.hf import SdlTrainer

    dataset = TokenWindows(val_windows(token_dataset, 13), seq_len=SEQ_LEN)
    loader = make_loader(dataset, batch_size=4, num_workers=0, rank=0, world_size=1, device="cpu")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    with pytest.raises(ConfigError, match="pass eval_loader=make_loader"):
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_dataset=dataset)
    with pytest.raises(ConfigError, match="got eval_loader and compute_metrics"):
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_loader=make_loader(dataset, batch_size=4, num_workers=0,
                   rank=0, world_size=1, device="cpu"), compute_metrics=lambda p: {})
    with pytest.raises(ConfigError, match="eval_loader is a TokenWindows, expected the loader make_loader"):
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_loader=dataset)
    accumulating = make_loader(dataset, batch_size=2, global_batch_size=4, num_workers=0, rank=0, world_size=1, device="cpu")
    with pytest.raises(ConfigError, match="drop global_batch_size"):
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_loader=accumulating)
    with pytest.raises(ConfigError, match="eval_loader is the train_loader"):
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_loader=loader)
    with pytest.raises(ConfigError, match="drop_last=True"):  # make_loader's default: would leave samples out
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_loader=make_loader(dataset, batch_size=4, num_workers=0,
                   rank=0, world_size=1, device="cpu"))
    read = make_loader(dataset, batch_size=4, shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1, device="cpu")
    next(iter(read))
    with pytest.raises(ConfigError, match="eval_loader stands 1 steps into its epoch"):
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_loader=read)
    metrics_args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True,
                                                  include_for_metrics=["inputs"])
    with pytest.raises(ConfigError, match="include_for_metrics=.'inputs'. feeds compute_metrics"):
        SdlTrainer(model=RowLoss(), args=metrics_args, train_loader=loader, eval_loader=make_loader(
            dataset, batch_size=4, shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1, device="cpu"))
    with pytest.raises(ConfigError, match="eval_dataset is .or holds. an sdl dataset"):
        SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_dataset={"val": dataset})
    own = make_loader(dataset, batch_size=4, shuffle=False, drop_last=False, num_workers=0, rank=0, world_size=1, device="cpu")
    trainer = SdlTrainer(model=RowLoss(), args=args, train_loader=loader, eval_loader=own)
    with pytest.raises(ConfigError, match="got an sdl dataset"):
        trainer.evaluate(eval_dataset=dataset)
    with pytest.raises(ConfigError, match="evaluates its one eval_loader"):
        trainer.evaluate(eval_dataset="val")
    with pytest.raises(ConfigError, match="predict.. got an sdl dataset"):
        trainer.predict(dataset)


class TargetsLoss(torch.nn.Module):
    """A model whose forward names its targets `targets` and whose loss is NaN for a batch holding window 5."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.0, 1.0, VOCAB))

    def forward(self, input_ids, targets):
        loss = self.weight[input_ids[:, 0]].mean()
        return {"loss": loss * float("nan") if (input_ids[:, 0] == 5 * SEQ_LEN).any() else loss}


def test_the_loss_is_evaluated_whatever_the_fields_are_named_and_a_nan_batch_is_left_out(token_dataset, tmp_path):
    """model_inputs renames labels to targets (the Trainer, looking for `labels`, would skip the loss); the batch holding
    window 5 has a NaN loss: left out of eval_loss under logging_nan_inf_filter (the default), NaN without it."""
    import math

    from sdl.loader.integrations.hf import SdlTrainer

    path = val_windows(token_dataset, 13)
    for nan_filter in (True, False):
        loader = make_loader(TokenWindows(path, seq_len=SEQ_LEN), batch_size=4, shuffle=False, drop_last=False, num_workers=0,
                             rank=0, world_size=1, device="cpu")
        train = make_loader(TokenWindows(path, seq_len=SEQ_LEN), batch_size=2, num_workers=0, rank=0, world_size=1, device="cpu")
        args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True,
                                              logging_nan_inf_filter=nan_filter)
        trainer = SdlTrainer(model=TargetsLoss(), args=args, train_loader=train, eval_loader=loader,
                             model_inputs=lambda b: {"input_ids": b["input_ids"], "targets": b["labels"]})
        loss = trainer.evaluate()["eval_loss"]
        weight = torch.linspace(0.0, 1.0, VOCAB).double()
        kept = [i for i in range(13) if i // 4 != 1]  # batches of 4 in order: window 5 is in the second
        assert math.isnan(loss) if not nan_filter else loss == pytest.approx(float(weight[torch.tensor(kept) * SEQ_LEN].mean()), rel=1e-6)


def test_a_trainer_batched_eval_dataset_reaches_the_model_whole(token_dataset, tmp_path):
    """model_inputs is for sdl batches: a datasets.Dataset the Trainer batches keeps its attention_mask."""
    import datasets
    from sdl.loader.integrations.hf import SdlTrainer

    class MaskSum(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, input_ids, labels, attention_mask):
            return {"loss": self.scale * attention_mask.float().mean()}

    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3, 4]] * 4, "labels": [[1, 2, 3, 4]] * 4,
                                       "attention_mask": [[1, 1, 0, 0]] * 4})
    train = make_loader(TokenWindows(val_windows(token_dataset, 13), seq_len=SEQ_LEN), batch_size=2, num_workers=0, rank=0,
                        world_size=1, device="cpu")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    trainer = SdlTrainer(model=MaskSum(), args=args, train_loader=train, eval_dataset=rows)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(0.5)


def test_a_model_without_a_loss_is_named(token_dataset, tmp_path):
    from sdl.loader.integrations.hf import SdlTrainer

    class NoLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(()))

        def forward(self, input_ids, labels):
            return {"loss": None, "logits": self.weight * input_ids.float()}

    path = val_windows(token_dataset, 13)
    loader = make_loader(TokenWindows(path, seq_len=SEQ_LEN), batch_size=4, shuffle=False, drop_last=False, num_workers=0,
                         rank=0, world_size=1, device="cpu")
    train = make_loader(TokenWindows(path, seq_len=SEQ_LEN), batch_size=2, num_workers=0, rank=0, world_size=1, device="cpu")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    with pytest.raises(ConfigError, match="the model returned no loss for an eval_loader batch"):
        SdlTrainer(model=NoLoss(), args=args, train_loader=train, eval_loader=loader).evaluate()


def test_a_padding_only_batch_counts_nothing_whatever_its_loss():
    from sdl.loader.integrations.hf_eval import EvalMean

    for drop_nonfinite in (True, False):
        mean = EvalMean("cpu", drop_nonfinite=drop_nonfinite)
        mean.add(torch.tensor(1.0), 3)
        mean.add(torch.tensor(float("inf")), 0)
        mean.add(torch.tensor(4.0), 1)
        assert mean.result() == pytest.approx(7 / 4)
