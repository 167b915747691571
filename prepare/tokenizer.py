"""Tokenizer loading and identity (bundled BPE, a folder, a tokenizer.json, or a HuggingFace name) and batch encoding.

The bundled tokenizer (`assets/tokenizer.json`) is a byte-level BPE with 8,192 ids trained on CPython
3.11's stdlib sources by `prepare/train_tokenizer.py`; id 0 is `<|endoftext|>` (EOS), 1 `<|startoftext|>` (BOS).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sdl.loader.errors import ConfigError, InputError

BUNDLED_NAME = "sdl-bpe-8k"
BUNDLED_PATH = Path(__file__).resolve().parent / "assets" / "tokenizer.json"
CONFIG_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")
PIECE_CHARS = 1 << 18   # documents longer than this many characters are encoded in pieces (split_pieces)
BOS_CANDIDATES = ("<|startoftext|>", "<s>", "<|begin_of_text|>", "<bos>", "<|bos|>", "[CLS]")


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizerSpec:
    """A loaded tokenizer's identity and its serialized form (what workers rebuild it from)."""

    name: str
    vocab_size: int
    eos_id: int | None
    bos_id: int | None
    hash: str
    json: str

    def identity(self) -> dict[str, Any]:
        """The manifest's `tokenizer` entry."""
        return {"name": self.name, "vocab_size": self.vocab_size, "eos_id": self.eos_id, "bos_id": self.bos_id, "hash": self.hash}

    def build(self) -> Any:
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.json)


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def _special_from_config(folder: Path, key: str) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


def _special_id(tokenizer: Any, folder: Path | None, key: str, candidates: tuple[str, ...]) -> int | None:
    named = _special_from_config(folder, key) if folder else None
    for token in ((named,) if named else ()) + candidates:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None


def _from_file(path: Path, name: str) -> TokenizerSpec:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception for malformed files
        raise InputError(f"{path}: not a HuggingFace tokenizer.json ({exc}); pass a tokenizer folder or tokenizer.json") from None
    folder = path.parent
    files = [folder / f for f in CONFIG_FILES if (folder / f).is_file()] if path.name == "tokenizer.json" else [path]
    return TokenizerSpec(name=name, vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                         eos_id=_special_id(tokenizer, folder, "eos_token", EOS_CANDIDATES),
                         bos_id=_special_id(tokenizer, folder, "bos_token", BOS_CANDIDATES),
                         hash=_hash_files(files), json=tokenizer.to_str())


def _from_hub(name: str, local_only: bool = False) -> TokenizerSpec:
    """A tokenizer by HuggingFace name, resolved as `AutoTokenizer.from_pretrained` does: the local cache, else a
    download when online; HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE are honoured by huggingface_hub itself."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(repo_id=name, filename="tokenizer.json", local_files_only=local_only)
    except LocalEntryNotFoundError:  # not cached, and offline or the Hub is out of reach
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE or local_only else "the Hub could not be reached"
        # the cache only from here: an unreachable Hub is not asked again for each of transformers' files (~25 s each)
        return _from_transformers(name, True) or _unknown(name, f"not in the local HuggingFace cache ({constants.HF_HUB_CACHE}) and {why}")
    except EntryNotFoundError:  # the repository has no tokenizer.json: slow files only
        return _from_transformers(name, local_only) or _unknown(name, "its repository has no tokenizer.json that transformers can convert")
    except Exception as exc:  # an invalid name, a missing or gated repository, a network error
        return _unknown(name, f"the Hub refused it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    for extra in CONFIG_FILES[1:]:  # the special tokens' names; absent in many repositories
        try:
            hf_hub_download(repo_id=name, filename=extra, local_files_only=local_only)
        except Exception:  # noqa: BLE001 - optional files
            pass
    return _from_file(Path(path), name)


def _unknown(name: str, why: str) -> TokenizerSpec:
    if name.startswith((".", "/", "~")) or name.endswith(".json"):  # a path, not a Hub name
        raise InputError(f"tokenizer {name!r}: no such file or folder; give an existing tokenizer folder or tokenizer.json "
                         "file, or a Hub name (organisation/name)")
    raise InputError(f"tokenizer {name!r}: not a folder with tokenizer.json nor a tokenizer.json file, and {why}; "
                     f"download it with `hf download {name}` (online), or pass a local path")


def _from_transformers(name: str, local_only: bool = False) -> TokenizerSpec | None:
    """A tokenizer without tokenizer.json (slow files only): let transformers load and convert it, as from_pretrained does."""
    try:
        from transformers import AutoTokenizer

        auto = AutoTokenizer.from_pretrained(name, use_fast=True, local_files_only=local_only)
        backend = auto.backend_tokenizer
    except Exception:  # not available, or no fast version: "unknown tokenizer" for the caller
        return None
    text = backend.to_str()
    ids = {key: auto.convert_tokens_to_ids(tok) if (tok := getattr(auto, key, None)) else None for key in ("eos_token", "bos_token")}
    return TokenizerSpec(name=name, vocab_size=backend.get_vocab_size(with_added_tokens=True), eos_id=ids["eos_token"],
                         bos_id=ids["bos_token"], hash="sha256:" + hashlib.sha256(text.encode()).hexdigest(), json=text)


def load_tokenizer(name_or_path: str | None = None, *, local_only: bool = False) -> TokenizerSpec:
    """The bundled tokenizer (None), a folder holding tokenizer.json, a tokenizer.json, or a HuggingFace name (cache, then
    the Hub unless `local_only`)."""
    if name_or_path is None:
        return _from_file(BUNDLED_PATH, BUNDLED_NAME)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return _from_file(path / "tokenizer.json", str(path))
    if path.is_file():
        return _from_file(path, str(path))
    if path.is_dir():
        raise InputError(f"{path}: a folder without tokenizer.json; expected a tokenizer folder (tokenizer.json inside), "
                         "a tokenizer.json file, or a HuggingFace tokenizer name")
    return _from_hub(name_or_path, local_only)


def resolve_dtype(spec: TokenizerSpec, dtype: str) -> str:
    """The shard dtype for `--dtype` (auto|uint16|uint32); uint16 only when every id fits."""
    if dtype == "auto":
        return "uint16" if spec.vocab_size <= 2**16 else "uint32"
    if dtype == "uint16" and spec.vocab_size > 2**16:
        raise ConfigError(f"--dtype uint16 holds ids below 65,536, but tokenizer {spec.name!r} has {spec.vocab_size:,} ids; "
                          "use --dtype uint32 or --dtype auto")
    return dtype


def split_pieces(text: str, piece_chars: int) -> Iterator[str]:
    """The pieces a long document is encoded in, so memory stays bounded however long it is (the rule the manifest's
    `piece_chars` names): while more than `piece_chars` characters remain, the next piece ends right before the last
    whitespace character (Unicode White_Space: not the separators \x1c-\x1f, which Python's str.isspace counts)
    followed by a non-whitespace one among the `piece_chars` characters after its first (a word keeps the one space
    before it, as byte-level BPE pre-tokenizes it), or after exactly `piece_chars` characters when there is none."""
    start = 0
    while len(text) - start > piece_chars:
        word_start = _LAST_WORD_START.match(text, start + 1, start + piece_chars + 2)
        end = word_start.end() if word_start else start + piece_chars
        yield text[start:end]
        start = end
    yield text[start:]


# Whitespace as byte-level BPE pre-tokenizers read it (Unicode White_Space): Python's \s also counts the ASCII
# separators \x1c-\x1f, which the tokenizer reads as punctuation, so a cut before one changed the tokens.
_LAST_WORD_START = re.compile(r"(?s).*(?=[^\S\x1c-\x1f][\S\x1c-\x1f])")


def encode_texts(tokenizer: Any, texts: list[str], *, bos_id: int | None, eos_id: int | None, dtype: str,
                 piece_chars: int = PIECE_CHARS) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts` as one array (each document: [BOS] ids [EOS]) and each document's length.

    Documents longer than `piece_chars` characters are encoded piece by piece (`split_pieces`), each piece's ids
    kept as a numpy array at once: one 200 MB document costs a few bytes per token, not the tokenizer's ~145
    bytes per input byte for a single call.
    """
    # Extending one Python list and converting once costs ~5% of encoding; a per-token generator cost ~60%.
    encodings = iter(tokenizer.encode_batch_fast([t for t in texts if len(t) <= piece_chars], add_special_tokens=False))
    ids: list[int] = []
    chunks, flushed = [], 0
    lengths = np.empty(len(texts), dtype=np.int64)
    for doc, text in enumerate(texts):
        before = flushed + len(ids)
        if bos_id is not None:
            ids.append(bos_id)
        if len(text) <= piece_chars:
            ids += next(encodings).ids
        else:
            chunks.append(np.array(ids, dtype=dtype))
            flushed, ids = flushed + len(ids), []
            for piece in split_pieces(text, piece_chars):
                chunks.append(np.array(tokenizer.encode_batch_fast([piece], add_special_tokens=False)[0].ids, dtype=dtype))
                flushed += len(chunks[-1])
        if eos_id is not None:
            ids.append(eos_id)
        lengths[doc] = flushed + len(ids) - before
    chunks.append(np.array(ids, dtype=dtype))
    return (np.concatenate(chunks) if len(chunks) > 1 else chunks[0]), lengths
