"""`sdl bench CONFIG.toml`: the window options (--seq-len, --stride) that a mixture config already defines."""

from __future__ import annotations

from pathlib import Path

from sdl.cli.options import refuse_ignored
from sdl.loader.errors import ConfigError


def check_config_windows(path: Path, given: dict[str, int]) -> None:
    """Accept `given` window flags ({"--seq-len": 2048}) that say what the config at `path` says (its values are used:
    its sources define the samples); refuse one that differs, or any when no source is cut into token windows."""
    from sdl.loader.data.mixture_config import read_mixture_config

    if not given:
        return
    config = read_mixture_config(path)
    if not any(source.kind == "tokens" for source in config.sources):
        refuse_ignored(list(given), ("does not apply", "do not apply"), f"to {path}: its sources are zarr or Arrow samples, "
                       "not token windows", "drop {them}")
    # no stride in the config: TokenWindows' default, seq_len
    defined = {"--seq-len": ("seq_len", config.seq_len), "--stride": ("stride", config.stride or config.seq_len)}
    for flag, value in given.items():
        key, expected = defined[flag]
        if value != expected:
            raise ConfigError(f"{flag} {value} differs from {path}'s {key} = {expected}, which cuts the mixture's token "
                              f"windows; drop {flag} (or give {expected}), or change {key} in the config")
