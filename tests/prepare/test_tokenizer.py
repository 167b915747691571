"""Tokenizers by name resolve as HuggingFace does: the cache HF_HOME names, offline mode honoured, a clear error naming `hf download`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from corpus import make_texts, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from sdl.prepare.tokenizer import BUNDLED_PATH

LOAD = "from sdl.prepare import load_tokenizer; s = load_tokenizer('acme/tiny-bpe'); print(s.name, s.vocab_size, s.eos_id)"


def hub_cache(home):
    """A HuggingFace hub cache under `home` holding model `acme/tiny-bpe` (its tokenizer.json), as `hf download` leaves it."""
    repo = home / "hub" / "models--acme--tiny-bpe"
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    shutil.copy(BUNDLED_PATH, repo / "snapshots" / ("a" * 40) / "tokenizer.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    return home


def test_a_name_resolves_from_the_cache_hf_home_names_and_offline_uncached_names_the_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env |= {"HF_HOME": str(hub_cache(tmp_path / "hf")), "HF_HUB_OFFLINE": "1"}
    found = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=120)
    assert found.stdout.split() == ["acme/tiny-bpe", "8192", "0"], found.stderr
    env["HF_HOME"] = str(tmp_path / "empty-home")
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(3))
    command = [sys.executable, "-m", "sdl.cli.main", "prepare", str(data), str(tmp_path / "out"), "--tokenizer", "acme/tiny-bpe"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: ")
    assert "HF_HUB_OFFLINE is set" in refused.stderr and "`hf download acme/tiny-bpe`" in refused.stderr
    assert not (tmp_path / "out").exists()
