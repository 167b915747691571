"""The mixture interleave: a bijection onto per-source draw sequences, within its bound over every window."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.errors import ConfigError
from sdl.loader.sampling.interleave import Interleave

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleave_checks import assert_draws_counted, window_deviation  # noqa: E402

weights_up_to_4 = st.lists(st.floats(0.001, 1000.0), min_size=1, max_size=4)
weights_up_to_8 = st.lists(st.floats(0.001, 1000.0), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(weights_up_to_4, st.integers(0, 10**9))
def test_up_to_four_sources_stay_within_two_over_every_window(weights, start):
    interleave = Interleave(weights=tuple(weights))
    assert interleave.bound <= 2
    assert window_deviation(interleave, 2000) <= 2
    # far into the stream too: counts from position `start` on
    source, _ = interleave.locate(np.arange(start, start + 500))
    base = interleave.counts(start)
    for s, w in enumerate(interleave.weights):
        prefix = base[s] + np.concatenate(([0], np.cumsum(source == s)))
        error = prefix - (start + np.arange(501)) * w
        assert error.max() - error.min() <= 2


@settings(max_examples=40, deadline=None)
@given(weights_up_to_8)
def test_any_number_of_sources_stays_within_the_reported_bound(weights):
    interleave = Interleave(weights=tuple(weights))
    assert window_deviation(interleave, 1500) < interleave.bound + 1e-9


def test_equal_weights_of_many_sources_stay_within_two():
    for n in range(1, 17):
        interleave = Interleave(weights=(1.0,) * n)
        assert interleave.bound < 2 and window_deviation(interleave, 1000) <= 2


@settings(max_examples=40, deadline=None)
@given(weights_up_to_8, st.integers(0, 10**12))
def test_draw_indices_count_each_source_and_counts_agree(weights, start):
    assert_draws_counted(Interleave(weights=tuple(weights)), start)


def test_a_weight_of_zero_is_never_drawn_and_positions_for_is_the_first_exhaustion():
    interleave = Interleave(weights=(3.0, 0.0, 1.0))
    source, _ = interleave.locate(np.arange(1000))
    assert 1 not in source.tolist() and interleave.weights == (0.75, 0.0, 0.25)
    t = interleave.positions_for([300, 5, 300])
    assert interleave.counts(t).tolist() == [300, 0, 100] and interleave.counts(t - 1)[0] == 299


def test_bad_weights_are_refused():
    for weights in ((0.0, 0.0), (-1.0, 2.0), (float("nan"), 1.0)):
        with pytest.raises(ConfigError, match="expected finite numbers >= 0"):
            Interleave(weights=weights)


def test_a_weight_too_small_to_divide_by_finds_the_first_exhaustion_silently():  # numpy warned of an overflow on stderr
    interleave = Interleave(weights=(1.0, 1e-308))  # the weights of a Mixture at {"web": 1e308, "code": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = interleave.positions_for([300, 5])
    assert interleave.counts(t).tolist() == [300, 0] and interleave.counts(t - 1)[0] == 299
