"""sdl.loader.integrations: training frameworks over an sdl loader — `sdl.loader.integrations.hf.SdlTrainer` (HF Trainer).

Import the module you need (`from sdl.loader.integrations.hf import SdlTrainer`): this package imports no framework.
Lightning needs no adapter: `make_loader(...)` returned from `train_dataloader()` is saved and restored by
Lightning's own checkpoints (see README, "Lightning"); `sdl.loader.runtime.host_resume` holds the loader's guard
against a mid-epoch resume from a checkpoint without its state.
"""

__all__ = []  # type: ignore[var-annotated]
