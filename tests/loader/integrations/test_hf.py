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

    loader = make_loader(TokenWindows(token_dataset(num_tokens=2_000, vocab_size=1000), seq_len=16), batch_size=2,
                         global_batch_size=8, num_workers=0, rank=0, world_size=1, device="cpu")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", gradient_accumulation_steps=2)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=4"):
        SdlTrainer(model=Tiny(), args=args, train_loader=loader)


def test_a_checkpoint_without_a_loader_state_is_named(tmp_path):
    from sdl.loader.integrations.hf import read_loader_state

    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoint-5 holds no sdl_loader_state.json"):
        read_loader_state(tmp_path / "checkpoint-5")
    (tmp_path / "checkpoint-5" / "sdl_loader_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not a loader state"):
        read_loader_state(tmp_path / "checkpoint-5")
