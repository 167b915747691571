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


def assert_draws_counted(interleave, start: int, length: int = 300) -> np.ndarray:
    """Positions [start, start + length): each source's draw indices run on from `counts(start)`, one by one, and the
    counts sum to the positions; the sources of those positions."""
    source, index = interleave.locate(np.arange(start, start + length))
    before = interleave.counts(start)
    assert before.sum() == start and interleave.counts(start + length).sum() == start + length
    for s in range(len(interleave.weights)):
        assert index[source == s].tolist() == list(range(before[s], before[s] + int((source == s).sum())))
    return source
