"""A guard for Lightning (which needs no adapter): a resume mid-epoch from a checkpoint that holds no state for the loader.

Lightning saves `loader.state_dict()` in its checkpoints and calls `load_state_dict` on a resume, before its first
batch. A checkpoint without that state (saved with another loader, or edited) still restores Lightning's own
progress — batch k of the epoch — while the loader starts the epoch over: the first k batches' samples would be
trained on twice and the last k never, silently (with `max_epochs=1`, or `max_steps`, nothing ever says so).

`unrestored_resume(loader)` finds the Lightning fit loop whose training loader this is on the call stack (the loader's
iteration starts inside `trainer.fit`) and, when that loop restarts mid-epoch (its batch progress restored above 0)
and the loader was never given a state, returns the message of the error the loader raises. Reading Lightning's loop
this way uses attributes of Lightning 2.x (`_FitLoop._combined_loader`, `epoch_loop.batch_progress`); where they are
missing (another version), the check finds nothing and stays silent, as before it existed.
"""

from __future__ import annotations

import sys
from typing import Any

FIT_LOOPS = ("lightning.pytorch.loops.fit_loop", "pytorch_lightning.loops.fit_loop")
MAX_FRAMES = 64  # the loader's iteration starts ~10 frames below trainer.fit's fit loop


def unrestored_resume(loader: Any) -> str | None:
    """The error message when `loader` is the training loader of a Lightning fit loop resuming mid-epoch without the
    loader's state (see the module docstring); None otherwise, and when Lightning is not running this iteration."""
    kinds = tuple(module._FitLoop for name in FIT_LOOPS if (module := sys.modules.get(name)) is not None
                  and hasattr(module, "_FitLoop"))
    if not kinds:
        return None
    # Frames are matched by their code: reading another frame's f_locals would keep its locals (a caller's last batch,
    # holding a worker's ring slot) alive in the frame's snapshot
    codes = {function.__code__ for kind in kinds for function in vars(kind).values() if hasattr(function, "__code__")}
    frame = sys._getframe(1)
    for _ in range(MAX_FRAMES):
        if frame is None:
            return None
        if frame.f_code in codes and isinstance(fit := frame.f_locals.get("self"), kinds):
            break
        frame = frame.f_back
    else:
        return None
    try:
        ours = any(candidate is loader for candidate in fit._combined_loader.flattened)
        done = int(fit.epoch_loop.batch_progress.current.ready)
        restarting, epoch = bool(fit.restarting), int(fit.epoch_progress.current.completed)
    except (AttributeError, TypeError, ValueError):
        return None
    if not (ours and restarting and done > 0):
        return None
    return (f"Lightning is resuming epoch {epoch} after its batch {done} from a checkpoint that holds no state for this "
            f"sdl loader, which would start the epoch over: the samples of those {done} batches would be trained on "
            "twice and the epoch's last ones never; resume from a checkpoint saved while train_dataloader() returned "
            "make_loader(...) (Lightning then saves the loader's state), or from one saved at an epoch's end")
