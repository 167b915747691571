"""SdlTrainer refuses what would silently train on another stream: a gradient accumulation that disagrees with the
loader's global batch, a checkpoint without a loader state."""

import pytest
import torch
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(1000, 4)

    def forward(self, input_ids, labels):
        return {"loss": self.embed(input_ids).float().mean()}


def test_accumulation_must_match_the_loaders_global_batch(token_dataset, tmp_path):
    from sdl.loader.integrations.hf import SdlTrainer

    dataset = TokenWindows(token_dataset(num_tokens=2_000, vocab_size=1000), seq_len=16)
    loader = make_loader(dataset, batch_size=2, global_batch_size=8, num_workers=0, rank=0, world_size=1, device="cpu")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", gradient_accumulation_steps=2)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=4"):
        SdlTrainer(model=Tiny(), args=args, train_loader=loader)
    one = make_loader(dataset, batch_size=8, global_batch_size=8, num_workers=0, rank=0, world_size=1, device="cpu")  # A = 1
    with pytest.raises(ConfigError, match="each global step of 1 micro-batches .* set gradient_accumulation_steps=1"):
        SdlTrainer(model=Tiny(), args=args, train_loader=one)  # the Trainer would step every 2 × 8 = 16 samples, not G


def test_a_checkpoint_without_a_loader_state_is_named(tmp_path):
    from sdl.loader.integrations.hf import read_loader_state

    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoint-5 holds no sdl_loader_state.json"):
        read_loader_state(tmp_path / "checkpoint-5")
    (tmp_path / "checkpoint-5" / "sdl_loader_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not a loader state"):
        read_loader_state(tmp_path / "checkpoint-5")


def _train(tmp_path, loader, steps, **arguments):
    from sdl.loader.integrations.hf import SdlTrainer

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", max_steps=steps, save_steps=2,
                                          learning_rate=0.0, use_cpu=True, logging_steps=1000, **arguments)
    return SdlTrainer(model=Tiny(), args=args, train_loader=loader)


def _loader(path, batch_size):
    return make_loader(TokenWindows(path, seq_len=16), batch_size=batch_size, num_workers=0, rank=0, world_size=1, device="cpu")


def test_a_resume_with_another_global_batch_or_a_mixed_folder_is_refused(token_dataset, tmp_path):
    """The Trainer counts saved steps in optimizer steps: another batch per step would misplace every epoch (or end at
    once); a loader state from another step than the Trainer state beside it is a folder of two saves."""
    import json

    path = token_dataset(num_tokens=4_000, vocab_size=1000)
    trainer = _train(tmp_path, _loader(path, 4), 4)
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    saved = json.loads((checkpoint / "sdl_loader_state.json").read_text())
    assert saved["global_step"] == 2 and saved["samples_per_step"] == 4 and saved["loader"]["cursor"] == 8
    with pytest.raises(CheckpointError, match="trained with 4 samples per optimizer step, this run has 8"):
        _train(tmp_path, _loader(path, 8), 6).train(resume_from_checkpoint=str(checkpoint))
    later = json.loads((tmp_path / "run" / "checkpoint-4" / "sdl_loader_state.json").read_text())
    (checkpoint / "sdl_loader_state.json").write_text(json.dumps(later))
    with pytest.raises(CheckpointError, match="loader state was saved at step 4, the Trainer state at step 2"):
        _train(tmp_path, _loader(path, 4), 6).train(resume_from_checkpoint=str(checkpoint))
    (checkpoint / "sdl_loader_state.json").write_text(json.dumps(saved["loader"]))  # as an earlier sdl wrote it
    _train(tmp_path, _loader(path, 4), 6).train(resume_from_checkpoint=str(checkpoint))


def test_the_loader_state_is_written_before_the_trainers_own_files(token_dataset, tmp_path, monkeypatch):
    """A save cut short after the loader state leaves it in place; the Trainer's files (and the deletion of older
    checkpoints) come after it, so no checkpoint the Trainer can resume from lacks it."""
    def cut_short(self, model, trial):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", cut_short)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, _loader(token_dataset(num_tokens=4_000, vocab_size=1000), 4), 4).train()
    assert (tmp_path / "run" / "checkpoint-2" / "sdl_loader_state.json").is_file()


def test_the_trainers_data_settings_are_refused_or_warned_about(token_dataset, tmp_path):
    path = token_dataset(num_tokens=4_000, vocab_size=1000)
    with pytest.raises(ConfigError, match="ignore_data_skip=True"):
        _train(tmp_path, _loader(path, 4), 4, ignore_data_skip=True)
    with pytest.warns(UserWarning, match="ignores dataloader_num_workers=2, dataloader_drop_last=True"):
        trainer = _train(tmp_path, _loader(path, 4), 4, dataloader_num_workers=2, dataloader_drop_last=True)
    assert trainer._train_batch_size == 4  # what the Trainer logs and records: the loader's batch, not its default 8



GOOD_SAVED = {"format": "sdl-trainer-1", "global_step": 2, "samples_per_step": 4, "loader": {"format": "sdl-loader-state"}}
DROP = object()  # the key is missing


@pytest.mark.parametrize("change, field, found", [
    ({"samples_per_step": DROP}, "samples_per_step", "missing"),  # was KeyError: 'samples_per_step'
    ({"loader": DROP}, "loader", "missing"),  # was KeyError: 'loader'
    ({"global_step": DROP}, "global_step", "missing"),
    ({"samples_per_step": "8"}, "samples_per_step", "'8' (str)"),  # was ValueError: Cannot specify ',' with 's'
    ({"samples_per_step": True}, "samples_per_step", "True (bool)"),
    ({"samples_per_step": 0}, "samples_per_step", "0 (int)"),
    ({"samples_per_step": 4.0}, "samples_per_step", "4.0 (float)"),
    ({"global_step": "2"}, "global_step", "'2' (str)"),  # was "saved at step 2, the Trainer state at step 2"
    ({"global_step": None}, "global_step", "None (NoneType)"),
    ({"global_step": -1}, "global_step", "-1 (int)"),
    ({"global_step": False}, "global_step", "False (bool)"),
    ({"loader": [1]}, "loader", "[1] (list)"),
])
def test_a_damaged_field_of_the_saved_file_is_one_error_naming_it(tmp_path, change, field, found):
    import json

    from sdl.loader.integrations.hf import read_saved

    (tmp_path / "sdl_loader_state.json").write_text(json.dumps({k: v for k, v in {**GOOD_SAVED, **change}.items() if v is not DROP}))
    with pytest.raises(CheckpointError) as refused:
        read_saved(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'sdl_loader_state.json'}: field {field!r} is {found}, expected ")
    assert message.endswith("the checkpoint is corrupt: resume from another checkpoint") and "\n" not in message


def test_the_saved_file_takes_a_null_samples_per_step_and_refuses_unknown_fields(tmp_path):
    import json

    from sdl.loader.integrations.hf import read_saved

    file = tmp_path / "sdl_loader_state.json"
    file.write_text(json.dumps({**GOOD_SAVED, "samples_per_step": None}))  # what a loader without a sampler saves
    assert read_saved(tmp_path) == {**GOOD_SAVED, "samples_per_step": None}
    file.write_text(json.dumps({**GOOD_SAVED, "tokens_per_step": 64}))
    with pytest.raises(CheckpointError, match=r"unknown fields \['tokens_per_step'\]: it was written by a newer sdl"):
        read_saved(tmp_path)


def test_a_resume_from_a_damaged_saved_file_is_refused_before_training(token_dataset, tmp_path):
    import json

    path = token_dataset(num_tokens=4_000, vocab_size=1000)
    _train(tmp_path, _loader(path, 4), 2).train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    saved = json.loads((checkpoint / "sdl_loader_state.json").read_text())
    (checkpoint / "sdl_loader_state.json").write_text(json.dumps({**saved, "samples_per_step": "4"}))
    resumed = _train(tmp_path, _loader(path, 4), 4)
    with pytest.raises(CheckpointError, match=r"field 'samples_per_step' is '4' \(str\), expected an integer >= 1, or null"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 0
