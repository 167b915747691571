"""SdlTrainer: a `transformers.Trainer` that trains from an sdl loader and resumes its exact stream.

The Trainer's own resume fast-forwards the data: it counts `global_step % steps_per_epoch × accumulation` batches and
replays them through accelerate's `skip_first_batches`, which rebuilds a `DataLoader` from the loader's
`batch_sampler` (an sdl loader has none: `AttributeError`) and would skip a second time what the sdl state already
skipped. So SdlTrainer:

- returns the sdl loader from `get_train_dataloader()` as it is (no accelerate wrapping: the loader already gives
  each rank its slice, and `len()` is its micro-batches of a whole epoch, from which the Trainer counts epochs);
- writes the loader state into every `checkpoint-N/` folder (`sdl_loader_state.json`, by the process that saves
  the Trainer state; ranks stop together at an optimizer step, so every rank's state is the same one), before the
  Trainer writes its own files there (and deletes old checkpoints), with the step and the samples per optimizer
  step it was saved at;
- on `train(resume_from_checkpoint=…)` loads that state into the loader, and while the resumed epoch starts, lets the
  Trainer keep its bookkeeping of the steps already done (step counter, epoch fraction, RNG) but hands it the loader
  itself instead of a skipping copy: the loader already stands where the checkpoint was taken. The Trainer counts
  its saved step in optimizer steps, so a resume whose samples per optimizer step (world size × batch size ×
  gradient accumulation) differ from the checkpoint's, or whose loader state is from another step, is refused: it
  would misplace every epoch boundary (or end at once, the steps "done").

Evaluation: `SdlTrainer(..., eval_loader=make_loader(val, ..., shuffle=False, drop_last=False))` evaluates the loss over
each sample of that loader's epoch once, the same samples every time, `eval_loss` the exact mean over samples
(`sdl.loader.integrations.hf_eval`).

The Trainer's own data settings do not reach an sdl loader (`make_loader`'s arguments decide them): non-default
`dataloader_num_workers`, `dataloader_prefetch_factor`, `dataloader_drop_last`, `data_seed` are warned about, and
`ignore_data_skip=True` (restart the epoch's data) is refused; the logged batch size is the loader's.

sdl batches (those carrying `sample_ids`) go to the model through `model_inputs(batch)` (default: the batch's
`input_ids`, `labels` and `position_ids`; `sample_ids` and the varlen fields stay out); other batches (an `eval_dataset`
the Trainer batches itself) go as they are. sdl labels are the inputs already shifted by one:
a HF `*ForCausalLM` shifts labels itself, so give it `model_inputs=lambda b: {"input_ids": b["input_ids"],
"labels": b["input_ids"]}`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import transformers
import transformers.trainer as hf_trainer
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.format.atomic import atomic_write_json
from sdl.loader.integrations.hf_eval import EVAL_ROWS, EvalMean, EvalPass, check_eval_arguments, check_eval_settings, is_sdl

STATE_FILE = "sdl_loader_state.json"
MODEL_KEYS = ("input_ids", "labels", "position_ids")


def default_model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch fields a model's forward takes: input_ids, labels, position_ids (when present)."""
    return {key: batch[key] for key in MODEL_KEYS if key in batch}


@contextlib.contextmanager
def _loader_not_skipped(loader: Any) -> Iterator[None]:
    """While the resumed epoch starts, `skip_first_batches(loader, n)` returns the loader itself (it stands past those
    n batches already); any other dataloader is skipped as accelerate does. Patched in the module that calls it."""
    skip = hf_trainer.skip_first_batches

    def keep_sdl_loader(dataloader: Any, num_batches: int = 0) -> Any:
        return dataloader if dataloader is loader else skip(dataloader, num_batches)

    hf_trainer.skip_first_batches = keep_sdl_loader
    try:
        yield
    finally:
        hf_trainer.skip_first_batches = skip


class SdlTrainer(transformers.Trainer):
    """`transformers.Trainer` over an sdl loader (`make_loader(...)`): `SdlTrainer(model=…, args=…, train_loader=loader)`."""

    def __init__(self, *args: Any, train_loader: Any, eval_loader: Any = None,
                 model_inputs: Callable[[dict], dict] = default_model_inputs, **kwargs: Any) -> None:
        check_eval_arguments(eval_loader, train_loader, kwargs)
        evaluation = None if eval_loader is None else EvalPass(eval_loader)
        if eval_loader is not None:  # the Trainer checks that evaluation has an eval_dataset; get_eval_dataloader reads it
            kwargs["eval_dataset"] = eval_loader
        super().__init__(*args, **kwargs)
        self.train_loader, self.model_inputs, self.eval_loader = train_loader, model_inputs, evaluation
        if evaluation is not None:
            check_eval_settings(self.args)
        self._eval_mean: EvalMean | None = None  # while an evaluation over eval_loader runs
        # A = G / (W·B) when the loader was given global_batch_size (1 included: G is then one micro-batch), else none
        accumulate = getattr(getattr(train_loader, "sampler", None), "accumulate", None)
        if accumulate is None and getattr(train_loader, "accumulation_steps", 1) != 1:
            accumulate = train_loader.accumulation_steps
        if accumulate is not None and accumulate != self.args.gradient_accumulation_steps:
            raise ConfigError(
                f"the loader makes each global step of {accumulate} micro-batches (global_batch_size), TrainingArguments has "
                f"gradient_accumulation_steps={self.args.gradient_accumulation_steps}; set gradient_accumulation_steps={accumulate}")
        check_data_arguments(self.args)
        sampler = getattr(train_loader, "sampler", None)
        if sampler is not None:  # what the Trainer logs and records as its batch size: the loader's
            self._train_batch_size = sampler.batch_size

    def samples_per_step(self) -> int | None:
        """Samples of one optimizer step over all ranks: the loader's micro-batch (W·B) × gradient accumulation."""
        sampler = getattr(self.train_loader, "sampler", None)
        return None if sampler is None else sampler.micro_batch_size * self.args.gradient_accumulation_steps

    def get_train_dataloader(self) -> Any:
        return self.train_loader

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        if self.eval_loader is not None and (eval_dataset is None or eval_dataset is self.eval_loader.loader):
            return self.eval_loader
        if self.eval_loader is not None and isinstance(eval_dataset, str):
            raise ConfigError(f"evaluate(eval_dataset={eval_dataset!r}) names one of several eval datasets; this SdlTrainer evaluates "
                              "its one eval_loader: call evaluate()")
        if is_sdl(eval_dataset):
            raise ConfigError("evaluate(eval_dataset=...) got an sdl dataset or loader; give SdlTrainer "
                              "eval_loader=make_loader(dataset, ..., shuffle=False, drop_last=False) and call evaluate()")
        return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        if is_sdl(test_dataset):
            raise ConfigError("predict() got an sdl dataset or loader, which the Trainer's collator cannot batch; SdlTrainer "
                              "evaluates the loss of an eval_loader (evaluate()); run the model over the loader's batches yourself")
        return super().get_test_dataloader(test_dataset)

    def evaluation_loop(self, dataloader: Any, *args: Any, metric_key_prefix: str = "eval", **kwargs: Any) -> Any:
        """The Trainer's loop; over the eval_loader, its `eval_loss` replaced by the exact mean over samples (EvalMean)."""
        if dataloader is not self.eval_loader:
            return super().evaluation_loop(dataloader, *args, metric_key_prefix=metric_key_prefix, **kwargs)
        self._eval_mean = EvalMean(self.args.device, drop_nonfinite=self.args.logging_nan_inf_filter)
        try:
            output = super().evaluation_loop(dataloader, *args, metric_key_prefix=metric_key_prefix, **kwargs)
            output.metrics[f"{metric_key_prefix}_loss"] = self._eval_mean.result()
        finally:
            self._eval_mean = None
        return output

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: Any = None) -> Any:
        rows = inputs.pop(EVAL_ROWS, None)
        if rows is None or self._eval_mean is None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        with torch.no_grad(), self.compute_loss_context_manager():  # the loss, whatever the batch's fields are named
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        if not isinstance(loss, torch.Tensor):
            raise ConfigError(f"the model returned no loss for an eval_loader batch (found {loss!r}); SdlTrainer evaluates the loss "
                              "the model's forward returns (\"loss\" of a dict or ModelOutput, or a tuple's first element)")
        loss = loss.detach().mean()
        self._eval_mean.add(loss, rows)
        return loss, None, None

    def _inner_training_loop(self, *args: Any, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
        if resume_from_checkpoint is not None:
            saved = read_saved(resume_from_checkpoint)
            check_resume(resume_from_checkpoint, saved, self.samples_per_step())
            self.train_loader.load_state_dict(saved["loader"])
        return super()._inner_training_loop(*args, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        with _loader_not_skipped(self.train_loader):
            return super()._run_epoch(*args, **kwargs)

    def _prepare_inputs(self, inputs: Any) -> Any:  # an sdl batch (it carries sample_ids) through model_inputs; others as they are
        return super()._prepare_inputs(self.model_inputs(inputs) if isinstance(inputs, dict) and "sample_ids" in inputs else inputs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        if self.args.should_save:  # first: the Trainer's own files (and its deletion of old checkpoints) come after
            folder = os.path.join(self._get_output_dir(trial=trial), f"{hf_trainer.PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            atomic_write_json(os.path.join(folder, STATE_FILE), {"format": SAVED_FORMAT, "global_step": self.state.global_step,
                                                                "samples_per_step": self.samples_per_step(),
                                                                "loader": self.train_loader.state_dict()})
        super()._save_checkpoint(model, trial)


SAVED_FORMAT = "sdl-trainer-1"  # sdl_loader_state.json: {format, global_step, samples_per_step, loader}; before: the state alone


def check_data_arguments(args: Any) -> None:
    """Refuse `ignore_data_skip=True` (the loader resumes exactly); warn that the Trainer's data settings are not used."""
    import warnings

    if args.ignore_data_skip:
        raise ConfigError("ignore_data_skip=True: an sdl loader resumes exactly where the checkpoint stood and cannot restart "
                          "the epoch's data under the Trainer's step count; drop it (or start a new run without resuming)")
    ignored = [f"{name}={getattr(args, name)!r}" for name, default in (("dataloader_num_workers", 0), ("dataloader_prefetch_factor", None),
                                                                       ("dataloader_drop_last", False), ("data_seed", None))
               if getattr(args, name, default) != default]
    if ignored:
        warnings.warn(f"SdlTrainer ignores {', '.join(ignored)}: the sdl loader's own settings (make_loader's num_workers, "
                      "prefetch_factor, drop_last, seed) decide them", stacklevel=3)


def read_saved(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What SdlTrainer saved in a `checkpoint-N/` folder: {"loader": state, "global_step", "samples_per_step"} (the last
    two None for a file written by an earlier sdl, which held the state alone)."""
    path = os.path.join(checkpoint, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint} holds no {STATE_FILE}: it was not written by SdlTrainer, or its save was cut "
                              "short; resume from an earlier checkpoint SdlTrainer saved, or load the loader state yourself") from None
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a loader state ({exc}); the checkpoint is corrupt") from None
    if isinstance(data, dict) and data.get("format") == SAVED_FORMAT:
        return checked_saved(path, data)
    return {"loader": data, "global_step": None, "samples_per_step": None}


# The fields of a SAVED_FORMAT file, what each must be, and the test of it (a bool is not an integer here).
SAVED_FIELDS = {
    "loader": ("the loader state (a dict)", lambda v: isinstance(v, dict)),
    "global_step": ("an integer >= 0", lambda v: type(v) is int and v >= 0),
    "samples_per_step": ("an integer >= 1, or null", lambda v: v is None or (type(v) is int and v >= 1)),
}


def checked_saved(path: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` when each field SdlTrainer writes is there and of its type; otherwise the one error naming the field."""
    unknown = sorted(set(data) - {"format", *SAVED_FIELDS})
    if unknown:
        raise CheckpointError(f"{path} has unknown fields {unknown}: it was written by a newer sdl; upgrade sdl")
    for name, (expected, valid) in SAVED_FIELDS.items():
        if name in data and valid(data[name]):
            continue
        found = "missing" if name not in data else f"{repr(data[name])[:60]} ({type(data[name]).__name__})"
        raise CheckpointError(f"{path}: field {name!r} is {found}, expected {expected}; the checkpoint is corrupt: "
                              "resume from another checkpoint")
    return data


def read_loader_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The sdl loader state stored in a Trainer `checkpoint-N/` folder."""
    return read_saved(checkpoint)["loader"]


def check_resume(checkpoint: str | os.PathLike, saved: dict[str, Any], samples_per_step: int | None) -> None:
    """Refuse a resume the Trainer would count wrongly: another number of samples per optimizer step, or a loader state
    saved at another step than the Trainer state beside it."""
    if saved["samples_per_step"] is not None and samples_per_step is not None and saved["samples_per_step"] != samples_per_step:
        raise CheckpointError(
            f"{checkpoint} was trained with {saved['samples_per_step']:,} samples per optimizer step, this run has {samples_per_step:,} "
            "(world size × batch size × gradient accumulation): the Trainer counts its saved steps in the new size and would "
            "misplace every epoch; resume with the same global batch (any world size), or load the loader state into a new run")
    try:
        with open(os.path.join(checkpoint, hf_trainer.TRAINER_STATE_NAME), encoding="utf-8") as handle:
            trainer_step = json.load(handle).get("global_step")
    except (OSError, ValueError):
        return  # the Trainer reports its own missing or damaged state
    if saved["global_step"] is not None and trainer_step != saved["global_step"]:
        raise CheckpointError(f"{checkpoint}: the loader state was saved at step {saved['global_step']}, the Trainer state at "
                              f"step {trainer_step}; the folder mixes two saves: resume from a checkpoint SdlTrainer wrote whole")
