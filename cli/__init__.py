"""sdl.cli: the `sdl` command (`sdl.cli.main:main`). Typer parses, one library function does the work, Rich renders.

Nothing is re-exported here: `sdl.cli.main` must stay the module (re-exporting its `main` function
would shadow it).
"""

__all__: list[str] = []
