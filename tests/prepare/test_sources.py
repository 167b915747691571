"""Input resolution: sorted deterministic order, folders/globs, job splits, config files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sdl.loader.errors import ConfigError, InputError
from sdl.prepare.config import PrepareConfig, load_config_file, make_config
from sdl.prepare.sources import resolve_sources, split_for_job, stdlib_files


def test_folder_and_glob_order_is_sorted_and_deduplicated(tmp_path):
    for name in ["b/2.txt", "a.jsonl", "b/1.txt", "c.parquet", ".hidden/x.txt", "notes.md", "z.json.gz"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    files = resolve_sources((str(tmp_path), str(tmp_path / "*.jsonl")))
    names = [f.path[len(str(tmp_path)) + 1:] for f in files]
    assert names == ["a.jsonl", "b/1.txt", "b/2.txt", "c.parquet", "z.json.gz"]
    assert [f.kind for f in files] == ["jsonl", "text", "text", "parquet", "jsonl"]


def test_job_split_covers_every_file_once():
    files = tuple(range(7))
    for num_jobs in range(1, 8):
        parts = [split_for_job(files, num_jobs, k) for k in range(num_jobs)]
        assert sum((list(p) for p, split in parts), []) == list(files) and not any(split for _, split in parts)
    assert split_for_job(files[:2], 3, 1) == (files[:2], True)


def test_stdlib_sources_are_sorted_python_files():
    files = stdlib_files()
    assert len(files) > 500 and all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts for f in files)


def test_config_file_unknown_key_and_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('sources = "a.jsonl"\ntokens_per_shard = 5\n')
    config = make_config(load_config_file(path), {"out": "o", "tokens_per_shard": 7, "dtype": None})
    assert config == PrepareConfig(sources=("a.jsonl",), out="o", tokens_per_shard=7)
    path.write_text("num_prc = 2\n")
    with pytest.raises(ConfigError, match="unknown key num_prc"):
        load_config_file(path)


def test_a_file_named_twice_in_any_spelling_is_read_once_under_its_first_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.jsonl").write_text('{"text": "x"}\n')
    Path("link.jsonl").symlink_to("a.jsonl")
    for specs in [("a.jsonl", str(tmp_path / "a.jsonl")), ("a.jsonl", "link.jsonl"), ("./a.jsonl", ".", "a.jsonl")]:
        assert [f.path for f in resolve_sources(specs)] == [os.path.normpath(specs[0])]


def test_an_output_folder_holding_the_inputs_is_named_not_called_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("oi").mkdir()
    Path("oi/a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(InputError, match=r"^oi: the input folder is also the output folder, .*; choose another output folder"):
        resolve_sources(("oi",), out="oi")
    with pytest.raises(InputError, match=r"^every input \(oi/a.jsonl\) lies inside the output folder oi, .*; choose an output folder "):
        resolve_sources(("oi/a.jsonl",), out="oi")



def test_a_hard_link_to_an_input_is_the_same_file_and_read_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("in/a.jsonl").write_text('{"text": "x"}\n')
    os.link("in/a.jsonl", "in/b.jsonl")  # another name, the same inode (another real path): read twice, before
    Path("c.jsonl").write_text('{"text": "x"}\n')  # the same bytes in another file: another input
    cases = {("in",): ["in/a.jsonl"], ("in/*.jsonl", "c.jsonl"): ["in/a.jsonl", "c.jsonl"],
             ("in/b.jsonl", "c.jsonl", "in/a.jsonl"): ["in/b.jsonl", "c.jsonl"]}  # kept under its first name
    for specs, expected in cases.items():
        assert [f.path for f in resolve_sources(specs)] == expected, specs
