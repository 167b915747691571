"""An sdl loader as Lightning's validation loader (real `lightning.Trainer`, CPU): each validation run sees every
validation sample once, and training still sees every training sample once per epoch."""

import pytest
import torch
from sdl.loader import TokenWindows, make_loader

L = pytest.importorskip("lightning")


class Recorder(L.LightningModule):
    def __init__(self, train, val) -> None:
        super().__init__()
        self.head, self.train_loader, self.val_loader = torch.nn.Linear(1, 1), train, val
        self.trained, self.validated = [], []

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return self.val_loader

    def training_step(self, batch, batch_idx):
        self.trained.append((self.current_epoch, batch["sample_ids"].tolist()))
        return self.head(batch["input_ids"][:, :1].float()).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.validated[-1].extend(batch["sample_ids"].tolist())

    def on_validation_epoch_start(self):
        self.validated.append([])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_an_sdl_loader_validates_in_lightning(token_dataset, tmp_path):
    windows = TokenWindows(token_dataset(num_tokens=2_000, vocab_size=1000), seq_len=16)
    held_out = TokenWindows(token_dataset(num_tokens=400, vocab_size=1000, name="val"), seq_len=16)
    train = make_loader(windows, batch_size=4, num_workers=0, rank=0, world_size=1, device="cpu")
    val = make_loader(held_out, batch_size=3, num_workers=0, rank=0, world_size=1, device="cpu", shuffle=False, drop_last=False)
    module = Recorder(train, val)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=str(tmp_path))
    trainer.fit(module)
    for epoch in (0, 1):
        ids = [i for e, batch in module.trained if e == epoch for i in batch]
        assert len(set(ids)) == len(ids) == len(windows) // 4 * 4  # every training sample once (the tail of < 4 dropped)
    assert len(module.validated) == 2 and all(sorted(run) == list(range(len(held_out))) for run in module.validated)
