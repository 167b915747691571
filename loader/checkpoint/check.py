"""Checking a loader state against a dataset (identity, sample count, window settings), and rebinding it knowingly."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdl.loader.errors import ConfigError
from sdl.loader.sampling.state import LoaderState

WINDOW_SETTINGS = ("seq_len", "stride", "shift", "split", "split_rate")


@dataclass(frozen=True, kw_only=True, slots=True)
class DatasetCheck:
    """How a loader state compares with a token dataset opened with the state's (or the given) window settings."""

    path: str
    fingerprint: str
    num_samples: int
    description: dict[str, Any]
    problems: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "matches": self.matches, "fingerprint": self.fingerprint,
                "num_samples": self.num_samples, "problems": list(self.problems)}


def check_dataset(state: LoaderState, path: str | Path, **settings: Any) -> DatasetCheck:
    """Open `path` as TokenWindows with the state's recorded settings (overridden by non-None `settings`) and compare."""
    from sdl.loader.data.windows import TokenWindows

    recorded = state.dataset or {}
    if recorded.get("kind", "tokens") != "tokens":
        raise ConfigError(f"the state was saved on a {recorded['kind']!r} dataset; --dataset checks token datasets only")
    chosen = {k: recorded[k] for k in WINDOW_SETTINGS if k in recorded}
    chosen |= {k: v for k, v in settings.items() if v is not None}
    if "seq_len" not in chosen:
        raise ConfigError("the state does not record its seq_len; pass --seq-len (and --stride) to check it against a dataset")
    windows = TokenWindows(path, **chosen)
    problems = [f"{k}: saved {recorded[k]!r}, checking with {chosen[k]!r}"
                for k in WINDOW_SETTINGS if k in recorded and recorded[k] != chosen.get(k)]
    if len(windows) != state.num_samples:
        problems.append(f"the state covers {state.num_samples:,} samples, the dataset gives {len(windows):,} with these settings")
    if windows.identity != state.fingerprint:
        cause = ("the dataset's files differ from those the state was saved on (re-prepared, modified, or another dataset)"
                 if not problems else "the dataset or its sample settings differ")
        problems.append(f"fingerprint {windows.identity} differs from the state's {state.fingerprint}: {cause}")
    return DatasetCheck(path=str(path), fingerprint=windows.identity, num_samples=len(windows),
                        description=windows.describe(), problems=tuple(problems))


def rebind_state(state: LoaderState, check: DatasetCheck) -> LoaderState:
    """The state moved onto the checked dataset (`--force`): its order key changes, so the rest of this epoch is
    not exactly-once with what was consumed before; the next epoch is."""
    cursor = min(state.cursor, check.num_samples)
    return replace(state, fingerprint=check.fingerprint, num_samples=check.num_samples, cursor=cursor,
                   consumed=state.consumed, dataset=check.description)
