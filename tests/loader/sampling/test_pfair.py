"""The Pfair table interleave: ±2 over every window for any number of sources whose weights are multiples of 1/D."""

import math
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.data.mixture_schedule import TREE, interleave_of
from sdl.loader.sampling.interleave import Interleave
from sdl.loader.sampling.pfair import MAX_PERIOD, PfairTable, exact_shares, schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleave_checks import assert_draws_counted, window_deviation  # noqa: E402

shares_of_many = st.lists(st.integers(0, 60), min_size=1, max_size=14).filter(lambda p: sum(p) > 0)


def weights_of(shares):
    total = sum(shares)
    return tuple(p / total for p in shares)


@settings(max_examples=80, deadline=None)
@given(shares_of_many)
def test_weights_of_any_number_of_sources_stay_within_two_over_every_window(shares):
    weights = weights_of(shares)
    interleave = interleave_of(weights)
    assert interleave.bound <= 2
    assert isinstance(interleave, PfairTable) or Interleave(weights=weights).bound <= 2  # the tree only where it keeps 2
    assert window_deviation(interleave, 3 * sum(shares) + 50) < 2  # across period boundaries too


@settings(max_examples=60, deadline=None)
@given(shares_of_many)
def test_every_pfair_window_is_met_and_each_period_holds_the_shares(shares):
    found = exact_shares(weights_of(shares))
    assert found is not None and found[0] <= sum(shares) and sum(found[1]) == found[0]
    period, exact = found
    order = schedule(period, exact)
    for s, p in enumerate(exact):
        slots = np.flatnonzero(order == s)
        assert len(slots) == p
        j = np.arange(1, p + 1)  # draw j lies in [floor((j - 1)·D / p), ceil(j·D / p))
        assert ((j - 1) * period // max(p, 1) <= slots).all() and (slots < -(-j * period // max(p, 1))).all()


@settings(max_examples=40, deadline=None)
@given(shares_of_many, st.integers(0, 10**12))
def test_draw_indices_count_each_source_counts_agree_far_into_the_stream(shares, start):
    found = exact_shares(weights_of(shares))
    source = assert_draws_counted(PfairTable(weights_of(shares), *found), start)
    assert all(shares[s] for s in set(source.tolist()))  # a weight of 0 is never drawn


@settings(max_examples=40, deadline=None)
@given(shares_of_many, st.lists(st.integers(0, 5000), min_size=14, max_size=14))
def test_positions_for_is_the_first_position_where_some_source_has_drawn_enough(shares, wanted):
    table = PfairTable(weights_of(shares), *exact_shares(weights_of(shares)))
    draws = wanted[:len(shares)]
    live = np.asarray(shares) > 0
    t = table.positions_for(draws)
    assert (table.counts(t)[live] >= np.asarray(draws)[live]).any()
    assert t == 0 or not (table.counts(t - 1)[live] >= np.asarray(draws)[live]).any()


def test_weights_that_are_no_multiples_of_a_short_period_keep_the_tree():
    weights = weights_of([math.pi, math.e, math.sqrt(2), 0.1, 0.77])
    assert exact_shares(weights) is None and isinstance(interleave_of(weights), Interleave)
    assert exact_shares(weights_of([1, MAX_PERIOD])) is None  # period 65,537
    decimal = (0.063, 0.769, 0.081, 0.082, 0.006)  # a tree bound of 2.27: the table
    assert Interleave(weights=decimal).bound > 2 and isinstance(interleave_of(decimal), PfairTable)
    assert isinstance(interleave_of(decimal, TREE), Interleave)  # phases written before the table read as written


def test_where_the_tree_breaks_two_the_table_keeps_it():
    weights = weights_of((0.857, 0.001, 0.094, 0.001, 0.049))
    assert window_deviation(Interleave(weights=weights), 2000) > 2  # some window of the tree is off by more than 2
    assert isinstance(interleave_of(weights), PfairTable) and window_deviation(interleave_of(weights), 2000) < 2
