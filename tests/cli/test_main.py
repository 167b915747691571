"""The one place that maps outcomes to exit codes: SdlError -> `error: …` + 1, usage errors -> 2, typer.Exit -> its code."""

import subprocess
import sys

import typer
from sdl.cli.main import app, main
from sdl.loader.errors import InputError


@app.command("_exit-probe", hidden=True)
def _exit_probe(code: int = 0, fail: bool = False, interrupt: bool = False) -> None:
    if fail:
        raise InputError("missing.txt: no such file; expected a text file, pass an existing path")
    if interrupt:
        raise KeyboardInterrupt  # Ctrl-C
    raise typer.Exit(code)


def test_exit_codes_reach_the_shell(capsys):
    assert main(["_exit-probe", "--code", "4"]) == 4
    assert main(["_exit-probe", "--code", "0"]) == 0
    assert main(["no-such-command"]) == 2
    assert main(["_exit-probe", "--fail"]) == 1
    err = capsys.readouterr().err
    assert "error: missing.txt: no such file; expected a text file, pass an existing path\n" in err
    assert "Traceback" not in err


def test_ctrl_c_exits_130_with_one_line_saying_a_re_run_continues(capsys):
    assert main(["_exit-probe", "--interrupt"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: interrupted; ") and "re-run the same command to continue" in err


def test_usage_errors_are_one_line_naming_the_help(capsys):
    """Bad option values, unknown options and commands: exit 2 and one line on stderr, as every other error."""
    for argv, wording in ((["_exit-probe", "--code", "abc"], "Invalid value for '--code'"),
                          (["_exit-probe", "--no-such-flag"], "No such option: --no-such-flag"),
                          (["no-such-command"], "No such command 'no-such-command'")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and wording in err and "--help`" in err, err


def test_sdl_debug_shows_the_traceback():
    code = "import sys; from sdl.loader.errors import InputError; import sdl.cli.main as m\n" \
           "@m.app.command('boom')\ndef boom():\n    raise InputError('bad')\nsys.exit(m.main(['boom']))"
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert quiet.returncode == 1 and quiet.stderr == "error: bad\n"
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"SDL_DEBUG": "1", "PATH": ""})
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_cli_start_up_imports_no_heavy_library():
    code = ("import sys, sdl.cli.main\n"
            "heavy = sorted(m for m in ('numpy', 'torch', 'transformers', 'datasets', 'zarr', 'pyarrow', 'tokenizers') if m in sys.modules)\n"
            "print(','.join(heavy))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"`sdl --help` pays for {loaded}: import it inside the command"
