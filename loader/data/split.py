"""Window arithmetic: how many token windows a stream holds, and the train/validation split over them.

Sample *i* of a token stream starts at global token `i * stride`; it needs `seq_len + max_shift`
tokens (inputs, plus labels shifted by up to `max_shift`). The train split is the first
`round(n * split_rate)` windows; validation starts after a gap of the windows that would share a
token with the last train window, so no validation token was ever a training token.
"""

from __future__ import annotations

from sdl.loader.errors import ConfigError

SPLITS = ("train", "val", "all")


def count_windows(num_tokens: int, seq_len: int, stride: int, max_shift: int = 1) -> int:
    """Number of windows of `seq_len + max_shift` tokens starting every `stride` tokens."""
    if seq_len <= 0 or stride <= 0 or max_shift < 0:
        raise ConfigError(f"seq_len, stride must be > 0 and shift >= 0, found seq_len={seq_len}, stride={stride}, shift={max_shift}")
    span = seq_len + max_shift
    return 0 if num_tokens < span else (num_tokens - span) // stride + 1


def split_range(num_windows: int, split: str, split_rate: float, seq_len: int = 1, stride: int = 1,
                max_shift: int = 1) -> range:
    """The window ids of `split` ("train", "val" or "all") under `split_rate` (the train fraction)."""
    if split not in SPLITS:
        raise ConfigError(f"split is {split!r}, expected one of {', '.join(SPLITS)}")
    if not 0.0 <= split_rate <= 1.0:
        raise ConfigError(f"split_rate is {split_rate}, expected a fraction in [0, 1]")
    if split == "all":
        return range(num_windows)
    num_train = round(num_windows * split_rate)
    if split == "train":
        return range(num_train)
    overlap = -(-(seq_len + max_shift) // stride) - 1  # windows after the last train one that share its tokens
    return range(min(num_windows, num_train + overlap), num_windows)
