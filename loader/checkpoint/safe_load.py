"""Loading a checkpoint safely: `torch.load(weights_only=True)` with numpy's data types allowed, or JSON; never code.

A checkpoint is a `.pt`/`.pth` file written by `torch.save` (tensors, containers, numbers, strings,
and the data-only numpy types of `safe_globals()`) or a `.json` state file.
"""

from __future__ import annotations

import json
import re
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
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused:
            raise CheckpointError(
                f"{path} needs the Python global {refused} to load, which could run code: sdl never unpickles code "
                "(torch.load weights_only=True); save plain data (tensors, dicts, lists, numbers, numpy arrays) instead"
            ) from None
        raise CheckpointError(f"{path}: not a torch checkpoint or truncated ({_first_line(exc)}); expected a file written by torch.save") from None
    except Exception as exc:  # torch.load reports a damaged file as RuntimeError, EOFError, KeyError, …
        raise CheckpointError(f"{path}: not a torch checkpoint or truncated ({_first_line(exc)}); expected a file written by torch.save") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:160] if lines else type(exc).__name__
