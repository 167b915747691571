"""Trains the bundled byte-level BPE tokenizer (`assets/tokenizer.json`) on the running interpreter's stdlib sources.

Run from the repository root: `python prepare/train_tokenizer.py`. Deterministic for a given stdlib and
`tokenizers` version; the committed file was trained on CPython 3.11.7's stdlib with tokenizers 0.23.3.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 8192
SPECIAL_TOKENS = ["<|endoftext|>", "<|startoftext|>"]  # ids 0 (EOS) and 1 (BOS)
MAX_TRAIN_BYTES = 12_000_000  # the first ~12 MB of sorted stdlib sources: enough for an 8k vocabulary


def training_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if not {"site-packages", "dist-packages"} & set(p.parts))
    chosen, total = [], 0
    for path in files:
        if total >= MAX_TRAIN_BYTES:
            break
        chosen.append(path)
        total += path.stat().st_size
    return chosen


def texts(files: list[Path]):
    for path in files:
        yield path.read_text(encoding="utf-8", errors="replace")


def train(out: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    files = training_files()
    tokenizer.train_from_iterator(texts(files), trainer=trainer, length=len(files))
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out), pretty=False)
    return tokenizer


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "assets" / "tokenizer.json"
    trained = train(target)
    print(f"wrote {target} ({target.stat().st_size:,} bytes, vocab {trained.get_vocab_size():,})")
