"""Runs a README example as written, recording the batches it trains on and optionally killing it at a checkpoint.

    python readme_harness.py RECORD KILL SCRIPT [ARGS...]

RECORD: each process appends the `sample_ids` of every batch an sdl loader (or torchdata's StatefulDataLoader)
hands to the training code, one JSON line a batch, to RECORD.<rank>.jsonl. KILL: "" (run to the end), "hf:K"
(die right after SdlTrainer saved checkpoint-K), "lightning:K" (after Lightning saved its last checkpoint at step
K), "save:K" (after the K-th os.replace onto a checkpoint*, the examples' whole-or-nothing save). Dying is
`os._exit`: no cleanup, as after a SIGKILL.
"""

import json
import os
import runpy
import sys


def rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))


def recorded(iterate, record):
    def wrapper(self):
        with open(f"{record}.{rank()}.jsonl", "a") as out:
            for batch in iterate(self):
                out.write(json.dumps(batch["sample_ids"].tolist()) + "\n")
                out.flush()
                yield batch
    return wrapper


def install_recording(record: str) -> None:
    from sdl.loader.runtime.loader import SdlLoader
    from torchdata.stateful_dataloader import StatefulDataLoader

    SdlLoader.__iter__ = recorded(SdlLoader.__iter__, record)
    original = StatefulDataLoader.__iter__

    class Recorded:  # StatefulDataLoader keeps its own iterator for state_dict(); only what is handed over is logged
        def __init__(self, loader):
            self.it, self.out = original(loader), open(f"{record}.{rank()}.jsonl", "a")

        def __iter__(self):
            return self

        def __next__(self):
            batch = next(self.it)
            self.out.write(json.dumps(batch["sample_ids"].tolist()) + "\n")
            self.out.flush()
            return batch

    StatefulDataLoader.__iter__ = lambda self: Recorded(self)


def install_kill(kill: str) -> None:
    host, _, step = kill.partition(":")
    step = int(step or 0)
    if host == "hf":
        from sdl.loader.integrations.hf import SdlTrainer

        save = SdlTrainer._save_checkpoint

        def save_then_die(self, model, trial):
            save(self, model, trial)
            if self.state.global_step == step:
                os._exit(0)

        SdlTrainer._save_checkpoint = save_then_die
    elif host == "lightning":
        import lightning.pytorch as pl

        save = pl.Trainer.save_checkpoint

        def save_then_die(self, filepath, *args, **kwargs):
            save(self, filepath, *args, **kwargs)
            if self.global_step == step and "last" in os.path.basename(str(filepath)):
                os._exit(0)

        pl.Trainer.save_checkpoint = save_then_die
    elif host == "save":
        replace, calls = os.replace, []

        def replace_then_die(src, dst, *args, **kwargs):
            replace(src, dst, *args, **kwargs)
            if os.path.basename(str(dst)).startswith("checkpoint"):
                calls.append(dst)
                if len(calls) == step:
                    os._exit(0)

        os.replace = replace_then_die


def main() -> None:
    record, kill, script, *args = sys.argv[1:]
    install_recording(record)
    if kill:
        install_kill(kill)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
