"""The package list in pyproject.toml matches the folders on disk, and the CLI starts."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_code_folder_is_a_listed_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(config["tool"]["setuptools"]["packages"])
    mapping = config["tool"]["setuptools"]["package-dir"]
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert {mapping[p] for p in packages} == on_disk
    assert packages == {f"sdl.{folder}" for folder in on_disk}


def test_loader_does_not_import_cli_libraries():
    code = "import sys, sdl.loader.index, sdl.loader.state; bad = {'typer','rich','transformers','datasets'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_version_and_help():
    version = subprocess.run([sys.executable, "-m", "sdl.cli.main", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("sdl ")
    helptext = subprocess.run([sys.executable, "-m", "sdl.cli.main", "--help"], capture_output=True, text=True)
    assert helptext.returncode == 0 and "prepare" in helptext.stdout
