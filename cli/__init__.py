"""sdl.cli: the `sdl` command. Typer parses, one library function does the work, Rich renders."""

from sdl.cli.main import app, main

__all__ = ["app", "main"]
