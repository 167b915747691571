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


class Stopped(Exception):
    pass


class Crashing(Recorder):
    """Trains on the loader its `make` builds in train_dataloader() (as the README says); stops the process at a step."""

    def __init__(self, make, crash_at=None) -> None:
        super().__init__(None, None)
        self.make, self.crash_at = make, crash_at

    def train_dataloader(self):
        return self.make()

    def training_step(self, batch, batch_idx):
        if self.global_step == self.crash_at:
            raise Stopped  # Lightning's checkpoints stay as a killed run leaves them
        return super().training_step(batch, batch_idx)


def test_a_mid_epoch_resume_from_a_checkpoint_without_the_loader_state_is_refused_at_its_first_batch(token_dataset, tmp_path):
    # Lightning restores its own progress (batch 6 of the epoch) either way; without the loader's state the loader would
    # start the epoch over: 6 batches trained twice, the last 6 never, and with max_epochs=1 nothing else would say so.
    from sdl.loader.errors import CheckpointError

    windows = TokenWindows(token_dataset(num_tokens=2_000, vocab_size=1000), seq_len=16)

    def trainer():
        every = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_last=True)
        return L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[every], enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path))

    def make():
        return make_loader(windows, batch_size=4, num_workers=0, rank=0, world_size=1, device="cpu")

    first = Crashing(make, crash_at=7)
    with pytest.raises(Stopped):
        trainer().fit(first)  # at step 7: the last checkpoint is step 6's
    checkpoint = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)  # Lightning's own file, which this test wrote
    assert checkpoint["loops"]["fit_loop"]["state_dict"].pop("combined_loader")  # as a checkpoint of another loader
    torch.save(checkpoint, tmp_path / "without-loader.ckpt")
    resumed = Crashing(make)
    with pytest.raises(CheckpointError, match=r"^Lightning is resuming epoch 0 after its batch 6 from a checkpoint that holds no "
                                              r"state for this sdl loader.*trained on twice") as raised:
        trainer().fit(resumed, ckpt_path=tmp_path / "without-loader.ckpt")
    assert resumed.trained == [] and "\n" not in str(raised.value)
    again = Crashing(make)  # with the loader's state: the rest of the epoch, every sample once over both runs
    trainer().fit(again, ckpt_path=tmp_path / "ck" / "last.ckpt")
    ids = [i for _, batch in first.trained[:6] + again.trained for i in batch]  # the checkpoint holds steps 0-5 of the first
    assert len(ids) == len(set(ids)) == len(windows) // 4 * 4
