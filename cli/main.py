"""The `sdl` entry point: registers the commands and is the one place that turns an SdlError into `error: …` + exit 1."""

from __future__ import annotations

import errno
import os
import sys
from importlib.metadata import PackageNotFoundError, version

import click
import typer
from sdl.loader.errors import SdlError

app = typer.Typer(
    name="sdl",
    help="Streaming dataloader: corpus -> token shards -> global index -> exactly-once, resumable batches on the GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    try:
        return version("streaming-dataloader")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sdl {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version_: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Streaming dataloader: corpus -> token shards -> global index -> exactly-once, resumable batches on the GPU."""


def _register() -> None:
    """Attach each command module's function; the modules import heavy libraries only inside the commands."""
    import importlib

    for name, module in (("prepare", "prepare"), ("index", "index"), ("inspect", "inspect"),
                         ("reshard-ckpt", "reshard"), ("bench", "bench"), ("demo", "demo"), ("bench-index", "bench_index"), ("bench-prepare", "bench_prepare")):
        try:
            command = importlib.import_module(f"sdl.cli.{module}").command
        except ModuleNotFoundError as exc:
            if exc.name != f"sdl.cli.{module}":
                raise
            continue
        app.command(name)(command)


_register()


def usage_line(exc: Exception) -> str:
    """A usage error (bad option value, unknown option or command) as one line, naming the command's --help."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message}; see `{ctx.command_path} --help`" if ctx is not None else message


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; SdlError -> one line on stderr and exit 1 (SDL_DEBUG=1 re-raises for the traceback)."""
    try:
        code = app(args=argv, prog_name="sdl", standalone_mode=False)  # click returns the code of an Exit
    except SdlError as exc:
        if os.environ.get("SDL_DEBUG") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except (click.exceptions.Abort, typer.Abort):
        print("error: aborted", file=sys.stderr)
        return 130
    except (click.ClickException, typer.TyperException) as exc:  # usage errors; typer >= 0.20 vendors its own click
        if not hasattr(exc, "format_message"):
            raise
        print(f"error: {usage_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the process's descriptor limit, wherever a file was opened (library opens say it themselves)
        if exc.errno not in (errno.EMFILE, errno.ENFILE) or os.environ.get("SDL_DEBUG") == "1":
            raise
        where = f" opening {exc.filename}" if exc.filename else ""
        print(f"error: out of file descriptors{where}; raise the limit (ulimit -n) and re-run the same command", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; every file written so far is whole, re-run the same command to continue", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
