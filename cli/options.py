"""Options a command would ignore in the combination given: named and refused in one line, never dropped."""

from __future__ import annotations

from typing import Any

from sdl.loader.errors import ConfigError


def given(options: dict[str, Any]) -> list[str]:
    """The flags of `{flag: value}` that were given: any value but None and False."""
    return [flag for flag, value in options.items() if value is not None and value is not False]


def refuse_ignored(flags: list[str], applies: tuple[str, str], where: str, fix: str) -> None:
    """ConfigError `FLAGS <verb> WHERE; FIX` when `flags` is not empty; `applies`: the verb for one flag and for several
    (e.g. ("only applies", "only apply")); `{them}` in `fix` reads "it" or "them"."""
    if flags:
        several = len(flags) > 1
        raise ConfigError(f"{', '.join(flags)} {applies[several]} {where}; {fix.format(them='them' if several else 'it')}")
