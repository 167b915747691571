"""SdlTrainer: a `transformers.Trainer` that trains from an sdl loader and resumes its exact stream.

The Trainer's own resume fast-forwards the data: it counts `global_step % steps_per_epoch × accumulation` batches and
replays them through accelerate's `skip_first_batches`, which rebuilds a `DataLoader` from the loader's
`batch_sampler` (an sdl loader has none: `AttributeError`) and would skip a second time what the sdl state already
skipped. So SdlTrainer:

- returns the sdl loader from `get_train_dataloader()` as it is (no accelerate wrapping: the loader already gives
  each rank its slice, and `len()` is its micro-batches of a whole epoch, from which the Trainer counts epochs);
- writes the loader state into every `checkpoint-N/` folder (`sdl_loader_state.json`, by the process that saves
  the Trainer state; ranks stop together at an optimizer step, so every rank's state is the same one);
- on `train(resume_from_checkpoint=…)` loads that state into the loader, and while the resumed epoch starts, lets the
  Trainer keep its bookkeeping of the steps already done (step counter, epoch fraction, RNG) but hands it the loader
  itself instead of a skipping copy: the loader already stands where the checkpoint was taken.

Batches go to the model through `model_inputs(batch)` (default: the batch's `input_ids`, `labels` and
`position_ids`; `sample_ids` and the varlen fields stay out). sdl labels are the inputs already shifted by one:
a HF `*ForCausalLM` shifts labels itself, so give it `model_inputs=lambda b: {"input_ids": b["input_ids"],
"labels": b["input_ids"]}`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import transformers
import transformers.trainer as hf_trainer
from sdl.loader.errors import CheckpointError, ConfigError
from sdl.loader.format.atomic import atomic_write_json

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

    def __init__(self, *args: Any, train_loader: Any, model_inputs: Callable[[dict], dict] = default_model_inputs,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_loader, self.model_inputs = train_loader, model_inputs
        accumulate = getattr(train_loader, "accumulation_steps", 1)
        if accumulate != 1 and accumulate != self.args.gradient_accumulation_steps:
            raise ConfigError(
                f"the loader makes each global step of {accumulate} micro-batches (global_batch_size), TrainingArguments has "
                f"gradient_accumulation_steps={self.args.gradient_accumulation_steps}; set gradient_accumulation_steps={accumulate}")

    def get_train_dataloader(self) -> Any:
        return self.train_loader

    def _inner_training_loop(self, *args: Any, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
        if resume_from_checkpoint is not None:
            self.train_loader.load_state_dict(read_loader_state(resume_from_checkpoint))
        return super()._inner_training_loop(*args, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        with _loader_not_skipped(self.train_loader):
            return super()._run_epoch(*args, **kwargs)

    def _prepare_inputs(self, inputs: Any) -> Any:
        return super()._prepare_inputs(self.model_inputs(inputs))

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{hf_trainer.PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            atomic_write_json(os.path.join(folder, STATE_FILE), self.train_loader.state_dict())


def read_loader_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The sdl loader state stored in a Trainer `checkpoint-N/` folder."""
    path = os.path.join(checkpoint, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint} holds no {STATE_FILE}: it was not written by SdlTrainer; resume from a "
                              "checkpoint SdlTrainer saved, or load the loader state yourself") from None
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a loader state ({exc}); the checkpoint is corrupt") from None
