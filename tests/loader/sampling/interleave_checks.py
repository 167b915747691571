"""Shared checks of mixture interleaves (the tree and the Pfair table)."""

import numpy as np


def window_deviation(interleave, length: int) -> float:
    """The largest |count of a source in a window - weight × window length| over every window of [0, length)."""
    source, _ = interleave.locate(np.arange(length))
    prefix = np.zeros((length + 1, len(interleave.weights)))
    for s in range(len(interleave.weights)):
        prefix[1:, s] = np.cumsum(source == s)
    error = prefix - np.arange(length + 1)[:, None] * np.asarray(interleave.weights)
    return float((error.max(axis=0) - error.min(axis=0)).max())
