"""SpanView: one read-only window view over several memory-mapped shards. Row `start[key] + offset` is the window at
`offset` of shard `key`, whatever the shards' addresses; arrays that cannot share a view are refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.data.span_view import SpanView


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Five memory-mapped uint32 shards of different lengths; shard k holds k * 1,000,000 + its token positions."""
    root = tmp_path_factory.mktemp("span")
    out = {}
    for key, length in enumerate((50, 7, 300, 64, 129)):
        np.save(root / f"s{key}.npy", np.arange(length, dtype=np.uint32) + key * 1_000_000)
        out[key] = np.load(root / f"s{key}.npy", mmap_mode="r").view(np.ndarray)
    return out


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_each_row_is_its_shards_window(shards, data):
    span = data.draw(st.integers(1, 7))
    keys = data.draw(st.lists(st.sampled_from(sorted(shards)), min_size=1, max_size=12))
    offsets = [data.draw(st.integers(0, len(shards[key]) - span)) for key in keys]
    view = SpanView(shards, span)
    windows = view.view[view.rows(np.array(keys, dtype=np.int64), np.array(offsets, dtype=np.int64))]
    expected = np.stack([shards[key][offset:offset + span] for key, offset in zip(keys, offsets)])
    np.testing.assert_array_equal(windows, expected)
    assert windows.dtype == np.uint32


def test_the_view_is_read_only_and_holds_its_shards(shards):
    view = SpanView({0: shards[0], 2: shards[2]}, 4)
    assert not view.view.flags.writeable
    with pytest.raises(ValueError):
        view.view[0, 0] = 1
    assert view.held(2) is shards[2] and view.held(1) is None


def test_arrays_that_cannot_share_a_view_are_refused(shards):
    with pytest.raises(ValueError, match="no shards"):
        SpanView({}, 4)
    with pytest.raises(ValueError, match="dtypes or layouts"):
        SpanView({0: shards[0], 9: np.zeros(10, dtype=np.uint16)}, 4)
    with pytest.raises(ValueError, match="dtypes or layouts"):
        SpanView({0: shards[2][::2]}, 4)  # not contiguous
    raw = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError, match="whole number of elements"):
        SpanView({0: raw[0:32].view(np.uint32), 1: raw[2:34].view(np.uint32)}, 2)
    with pytest.raises(ValueError, match="shorter than a window"):
        SpanView({1: shards[1]}, 8)
