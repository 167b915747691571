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


OS_ERRORS = {  # errno: (what happened, what to do)
    errno.EMFILE: ("out of file descriptors", "raise the limit (ulimit -n) and re-run the same command"),
    errno.ENFILE: ("the system is out of file descriptors", "close other programs' files and re-run the same command"),
    errno.EACCES: ("permission denied", "make it readable (and its folder writable, for outputs) for this user, then re-run"),
    errno.EPERM: ("operation not permitted", "check the file's owner and permissions, then re-run"),
    errno.ENOSPC: ("no space left on the device", "free space there (no partial file was left) and re-run the same command"),
    errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota (no partial file was left) and re-run the same command"),
    errno.EFBIG: ("file too large for this process's limit", "raise the limit (ulimit -f) and re-run the same command"),
    errno.EROFS: ("read-only file system", "give an output folder on a writable file system"),
}


def os_error_line(exc: OSError) -> str | None:
    """One line for an OSError the machine raised (descriptors, permissions, space), naming the file; None for others."""
    known = OS_ERRORS.get(exc.errno)
    if known is None:
        return None
    where = f" at {exc.filename}" if exc.filename else ""
    return f"{known[0]}{where}; {known[1]}"


INTERRUPTED = "error: interrupted; every file written so far is whole: re-run the same command to continue (sdl prepare resumes)"


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
        code = exc.exit_code
    except (click.exceptions.Abort, typer.Abort):  # a KeyboardInterrupt (Ctrl-C), as click and older typers raise it
        code = 130
    except (click.ClickException, typer.TyperException) as exc:  # usage errors; typer >= 0.20 vendors its own click
        if not hasattr(exc, "format_message"):
            raise
        print(f"error: {usage_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the machine refused: descriptors, permissions, space (every file sdl writes is whole or absent)
        line = os_error_line(exc)
        if line is None or os.environ.get("SDL_DEBUG") == "1":
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        code = 130
    if code == 130:  # Ctrl-C: typer turns the KeyboardInterrupt into a silent exit 130 (no sdl command exits 130 itself)
        print(INTERRUPTED, file=sys.stderr)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
