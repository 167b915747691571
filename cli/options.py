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


def on_command_line(ctx: Any, *names: str) -> list[str]:
    """The flags of the command's parameters `names` that the command line set (not left at their defaults), for options
    whose defaults are values, which `given` cannot tell from a value typed; `ctx`: the command's `typer.Context`."""
    return [param.opts[0] for param in ctx.command.params  # in the command's order
            if param.name in names and getattr(ctx.get_parameter_source(param.name), "name", None) == "COMMANDLINE"]
