"""The package list in pyproject.toml matches the folders on disk, and the CLI starts."""

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_code_folder_is_a_listed_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(config["tool"]["setuptools"]["packages"])
    mapping = config["tool"]["setuptools"]["package-dir"]
    on_disk = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("**/__init__.py")
               if not {"tests", "build"} & set(p.relative_to(ROOT).parts)
               and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)  # .venv, .git, ...
               and not (ROOT / p.relative_to(ROOT).parts[0] / "pyvenv.cfg").exists()}  # a virtualenv of any name
    top = {name: folder for name, folder in mapping.items()}

    def folder_of(package: str) -> str:  # sdl.loader.index -> loader/index, through the package-dir mapping
        parts = package.split(".")
        return "/".join([top[".".join(parts[:2])], *parts[2:]])

    assert {folder_of(p) for p in packages} == on_disk


def test_loader_does_not_import_cli_libraries():
    code = "import sys, sdl.loader.index, sdl.loader.sampling.state; bad = {'typer','rich','transformers','datasets'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_version_and_help():
    version = subprocess.run([sys.executable, "-m", "sdl.cli.main", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("sdl ")
    helptext = subprocess.run([sys.executable, "-m", "sdl.cli.main", "--help"], capture_output=True, text=True)
    assert helptext.returncode == 0 and "prepare" in helptext.stdout
