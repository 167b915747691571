"""Tokenizers by name resolve as HuggingFace does: the cache HF_HOME names, offline mode honoured, a clear error naming `hf download`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import hypothesis.strategies as st
from corpus import make_texts, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from hypothesis import given, settings
from sdl.prepare.tokenizer import BUNDLED_PATH, encode_texts, load_tokenizer

TOKENIZER = load_tokenizer().build()
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


# Unicode White_Space (what byte-level BPE pre-tokenizers call whitespace), then the ASCII separators that Python's
# str.isspace and re's \s also count and the tokenizer reads as punctuation.
WHITE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"
SEPARATORS = "\x1c\x1d\x1e\x1f"
PIECE_TEXTS = st.lists(st.tuples(st.text(WHITE + SEPARATORS, max_size=3), st.sampled_from(WHITE),
                                 st.text("ab1é.!'" + SEPARATORS, min_size=1, max_size=4)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(parts=PIECE_TEXTS, piece_chars=st.integers(8, 16))
def test_pieces_encode_like_the_whole_document_with_every_kind_of_whitespace(parts, piece_chars):
    """A word starts after a White_Space character at least every 8 characters (a run, one White_Space character, a
    word), so no piece is cut hard: the README's law holds at every cut."""
    text = "".join(run + white + word for run, white, word in parts)
    tokens, lengths = encode_texts(TOKENIZER, [text], bos_id=None, eos_id=None, dtype="uint32", piece_chars=piece_chars)
    assert tokens.tolist() == TOKENIZER.encode(text, add_special_tokens=False).ids and lengths.tolist() == [len(tokens)]
