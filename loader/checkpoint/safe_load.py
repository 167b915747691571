"""Loading a checkpoint safely: `torch.load(weights_only=True)` with numpy's data types allowed, or JSON; never code.

A checkpoint is a `.pt`/`.pth` file written by `torch.save` (tensors, containers, numbers, strings,
and the data-only numpy types of `safe_globals()`) or a `.json` state file.
Needs torch >= 2.6: `safe_globals` with `(callable, "module.name")` entries (pytorch/pytorch#142153, Dec 2024) and
BUILD of the numpy dtype classes an array pickles to (#139302, Oct 2024) both came after torch 2.5's branch cut;
torch 2.5's context manager takes bare callables only, and 2.4 has no context manager.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import traceback
import warnings
import zipfile
from pathlib import Path
from typing import Any

from sdl.loader.errors import CheckpointError, InputError

# Step: loading, never unpickling code.

def safe_globals() -> list[Any]:
    """The data-only globals a checkpoint may need beyond torch's defaults: numpy arrays, scalars and dtypes
    (what `np.random.get_state()`, numpy arrays and numpy scalars pickle to). `random.getstate()` is a tuple of ints."""
    import numpy as np
    import numpy.dtypes

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list[Any] = [np.ndarray, np.dtype, multiarray.scalar, multiarray._reconstruct,
                          (multiarray.scalar, "numpy.core.multiarray.scalar"),  # files written by numpy 1.x
                          (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [getattr(numpy.dtypes, name) for name in dir(numpy.dtypes)
                if name.endswith("DType") and name not in ("ObjectDType", "StringDType")]
    return allowed


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>")


def _refused_global(message: str) -> str | None:
    match = _REFUSED_GLOBAL.search(message)
    return (match.group(1) or match.group(2)) if match else None


def load_checkpoint(path: str | Path) -> Any:
    """The object stored in `path`: `torch.load(weights_only=True)` with numpy data types allowed, or JSON."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected a checkpoint file (.pt, .pth) or a loader state (.json): pass the file")
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a checkpoint (.pt, .pth) or a loader state (.json)")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc}); expected a loader state written by sdl") from None
        except RecursionError:
            raise CheckpointError(f"{path}: JSON nested too deeply to read; expected a loader state written by sdl "
                                  "(a flat dict of numbers and strings)") from None
    import torch

    allowed = safe_globals()  # outside the try: a broken environment is not a damaged file
    with torch.serialization.safe_globals(allowed), warnings.catch_warnings():  # (callable, name) entries need torch >= 2.6
        # a plain pickle (no torch zip) makes torch warn before it refuses; the refusal below is the one line said
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except DAMAGED as exc:
            if not _raised_inside(exc, Path(torch.__file__).parent):
                raise  # e.g. torch.load called wrongly: a programming error, not the file's fault
            raise _damaged(path, exc) from None
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}); check the file and its disk") from None


# What torch.load raises on a damaged or truncated file (measured by flipping and cutting bytes of real checkpoints
# under torch 2.13: RuntimeError from the zip reader, the rest from the weights-only unpickler choking on garbage).
DAMAGED = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, LookupError, TypeError, AttributeError,
           AssertionError, zipfile.BadZipFile, struct.error, OverflowError, MemoryError)


def _raised_inside(exc: BaseException, package: Path) -> bool:
    """Whether the innermost frame of `exc`'s traceback lies in `package` (torch's own reading code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).is_relative_to(package)


def _damaged(path: Path, exc: BaseException) -> CheckpointError:
    refused = _refused_global(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    if refused:
        return CheckpointError(
            f"{path} needs the Python global {refused} to load, which could run code: sdl never unpickles code "
            "(torch.load weights_only=True); save plain data (tensors, dicts, lists, numbers, numpy arrays) instead"
        )
    return CheckpointError(f"{path}: not a torch checkpoint or truncated ({type(exc).__name__}: "
                           f"{_first_line(exc)}); expected a file written by torch.save")


def _first_line(exc: BaseException) -> str:
    """What torch found wrong, in one sentence: the weights-only unpickler's own reason when there is one (not its
    advice about the `weights_only` default, which does not apply to a damaged file), else the first sentence."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".")[:160] if lines else "the file ends early"
