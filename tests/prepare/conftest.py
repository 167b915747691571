"""Puts tests/prepare on sys.path so the tests share `corpus.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
