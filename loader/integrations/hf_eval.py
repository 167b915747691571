"""SdlTrainer's evaluation over an sdl loader: each sample of the loader's epoch once, on any world size, and the exact mean.

`SdlTrainer(..., eval_loader=make_loader(val, batch_size=B, shuffle=False, drop_last=False))`. The Trainer's evaluation
loop reads `EvalPass`: the loader's whole epoch, from its start each time (the state it had when given, which must be
an epoch's start), so every evaluation reads the same samples. With W ranks the epoch's last step is padded with
samples wrapped from its start, so that every rank makes the same number of steps; those rows are cut from the batch
before the model, and a rank whose whole batch is padding still runs it (the ranks gather the loss together) but
counts 0 rows. Each batch carries its real rows (`EVAL_ROWS`), the trainer adds rows × batch loss and rows on each
rank (`EvalMean`), and `eval_loss` is their sum over ranks divided: the mean over samples of the model's per-batch
mean loss (exact when that loss is a mean over rows of equal length, as a causal LM's is). A batch whose loss is not
finite is left out when `logging_nan_inf_filter` is on (the Trainer's default, as its own mean does), else the mean
is NaN. Only the loss is evaluated (`compute_metrics` is refused beside an eval_loader).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from sdl.loader.data.windows import BATCH_ONLY_KEYS
from sdl.loader.errors import ConfigError

EVAL_ROWS = "sdl_eval_rows"  # the key an evaluation batch carries its real rows under, taken out before the model
MAKE = "make_loader(dataset, ..., shuffle=False, drop_last=False)"


class EvalPass:
    """The eval loader's epoch as the Trainer's evaluation loop reads it (see the module docstring)."""

    def __init__(self, loader: Any) -> None:
        if not all(hasattr(loader, name) for name in ("sampler", "state_dict", "load_state_dict", "plan")):
            raise ConfigError(f"eval_loader is a {type(loader).__name__}, expected the loader {MAKE} returns")
        if loader.accumulation_steps != 1:
            raise ConfigError(f"eval_loader makes global steps of {loader.accumulation_steps} micro-batches (global_batch_size); "
                              "evaluation takes one batch a step: drop global_batch_size from its make_loader")
        if loader.sampler.drop_last:
            raise ConfigError(f"eval_loader has drop_last=True (make_loader's default), which leaves up to world_size × batch_size - 1 "
                              f"samples out of every evaluation; make it with {MAKE}")
        if loader.plan().steps != len(loader):
            raise ConfigError(f"eval_loader stands {len(loader) - loader.plan().steps} steps into its epoch: evaluations would read "
                              "only the rest of it; give a loader that has not been iterated")
        self.loader, self.start = loader, loader.state_dict()
        self.dataset = loader.dataset  # the Trainer logs its length

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loader = self.loader
        loader.load_state_dict(self.start)
        plan, sampler = loader.plan(), loader.sampler
        step, rank_start, size = sampler.micro_batch_size, sampler.rank * sampler.batch_size, sampler.batch_size
        for k, batch in enumerate(loader):
            real = min(size, max(0, plan.samples - k * step - rank_start))  # the rows at positions < samples: the first ones
            yield real_rows(batch, real, size) | {EVAL_ROWS: real}


class EvalMean:
    """Σ rows × batch loss and Σ rows on this rank, kept on `device` (no sync per batch); `result()` sums them over ranks."""

    def __init__(self, device: Any, drop_nonfinite: bool) -> None:
        self.total = torch.zeros(2, dtype=torch.float64, device=device)
        self.drop_nonfinite = drop_nonfinite

    def add(self, loss: torch.Tensor, rows: int) -> None:
        if not rows:  # a padding-only batch: none of its rows counts, whatever its loss
            return
        loss = loss.to(torch.float64)
        if self.drop_nonfinite:
            keep = torch.isfinite(loss)
            self.total += torch.stack([torch.where(keep, loss * rows, 0.0), keep.to(torch.float64) * rows])
        else:
            self.total += torch.stack([loss * rows, torch.tensor(float(rows), dtype=torch.float64, device=loss.device)])

    def result(self) -> float:
        total = self.total
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            total = total.clone()
            torch.distributed.all_reduce(total)
        loss, rows = total.tolist()
        return loss / rows if rows else float("nan")


def real_rows(batch: dict[str, Any], real: int, size: int) -> dict[str, Any]:
    """The batch's first `real` of its `size` rows (all of them when `real` is 0: a rank's batch of padding alone, run
    and counted as 0 rows); `cu_seqlens`, cut at row boundaries, keeps the boundaries of those rows."""
    if real in (0, size):
        return dict(batch)
    out = {key: value[:real] if key not in BATCH_ONLY_KEYS and _rows(value) == size else value for key, value in batch.items()}
    if "cu_seqlens" in batch:
        bounds = batch["cu_seqlens"]
        out["cu_seqlens"] = bounds = bounds[bounds <= real * batch["input_ids"][0].numel()]
        out["max_seqlen"] = int((bounds[1:] - bounds[:-1]).max())
    return out


def _rows(value: Any) -> int | None:
    """The rows of a batch field: a tensor's first dimension, a list's length; None for a batch-wide value."""
    if isinstance(value, list):
        return len(value)
    return value.shape[0] if getattr(value, "ndim", 0) >= 1 else None


def is_sdl(value: Any) -> bool:
    """An sdl dataset or loader (sdl's classes all live under sdl.loader), or a dict holding one."""
    if isinstance(value, dict) and not type(value).__module__.startswith("sdl."):
        return any(is_sdl(item) for item in value.values())
    return type(value).__module__.startswith("sdl.loader.")


def check_eval_settings(args: Any) -> None:
    """Refuse TrainingArguments that feed compute_metrics (which an eval_loader does not take): `include_for_metrics`
    would also gather the batches' inputs, whose last ones have as many rows as each rank's real samples."""
    if getattr(args, "include_for_metrics", None):
        raise ConfigError(f"include_for_metrics={args.include_for_metrics!r} feeds compute_metrics, which SdlTrainer does not take "
                          "beside an eval_loader (it evaluates the loss alone); drop it")


def check_eval_arguments(eval_loader: Any, train_loader: Any, kwargs: dict[str, Any]) -> None:
    """Refuse sdl data as eval_dataset, the train loader as eval_loader, and an eval_loader beside an eval_dataset or
    compute_metrics."""
    if is_sdl(kwargs.get("eval_dataset")):
        raise ConfigError(f"eval_dataset is (or holds) an sdl dataset or loader, which the Trainer's collator cannot batch; pass "
                          f"eval_loader={MAKE} instead")
    if eval_loader is None:
        return
    if eval_loader is train_loader:
        raise ConfigError("eval_loader is the train_loader: every evaluation rewinds its loader to where it stood when given, "
                          "which would replay training data; make a loader of its own for evaluation (e.g. TokenWindows(..., split=\"val\"))")
    for name in ("eval_dataset", "compute_metrics"):
        if kwargs.get(name) is not None:
            raise ConfigError(f"SdlTrainer got eval_loader and {name}: with an eval_loader it evaluates the loss (eval_loss) "
                              f"over that loader alone; drop {name}, or evaluate it with a Trainer of its own")
