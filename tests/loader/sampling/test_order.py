"""Laws of the epoch order: a permutation, a pure function of (key, seed, epoch), different across epochs."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.errors import ConfigError
from sdl.loader.sampling.order import MODES, WALK_TABLE_HALF_BITS, Order, _domain_table, _feistel, _round_keys, _round_tables


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), seed=st.integers(0, 2**31), epoch=st.integers(0, 50), mode=st.sampled_from(MODES),
       block_size=st.integers(1, 64), window_blocks=st.integers(1, 8))
def test_each_epoch_order_is_a_permutation(n, seed, epoch, mode, block_size, window_blocks):
    order = Order(num_samples=n, seed=seed, epoch=epoch, mode=mode, block_size=block_size, window_blocks=window_blocks)
    ids = order[np.arange(n)]
    assert np.array_equal(np.sort(ids), np.arange(n))


def test_same_inputs_same_order_and_epochs_differ():
    a = Order(num_samples=5000, seed=3, epoch=1, key="ds")[np.arange(5000)]
    b = Order(num_samples=5000, seed=3, epoch=1, key="ds")[np.arange(5000)]
    assert np.array_equal(a, b)
    for other in (Order(num_samples=5000, seed=3, epoch=2, key="ds"), Order(num_samples=5000, seed=4, epoch=1, key="ds"),
                  Order(num_samples=5000, seed=3, epoch=1, key="other")):
        assert not np.array_equal(a, other[np.arange(5000)])


def test_lookup_is_pointwise_and_order_of_query_does_not_matter():
    order = Order(num_samples=10**12, seed=0, epoch=7)
    positions = np.array([10**12 - 1, 0, 123456789, 5])
    together = order[positions]
    assert [order[int(p)] for p in positions] == together.tolist()
    assert all(0 <= x < 10**12 for x in together)


def test_global_shuffle_spreads_consecutive_positions():
    ids = Order(num_samples=1_000_000, seed=0, epoch=0)[np.arange(1000)]
    assert np.abs(np.diff(ids)).mean() > 100_000  # not sequential: a true global shuffle


def test_locality_mode_keeps_batches_within_few_blocks():
    n, block, window = 1_000_000, 1024, 4
    ids = Order(num_samples=n, seed=0, epoch=0, mode="locality", block_size=block, window_blocks=window)[np.arange(64)]
    assert len(np.unique(ids // block)) <= window


def test_none_mode_is_sequential():
    assert Order(num_samples=10, seed=9, epoch=9, mode="none")[np.arange(10)].tolist() == list(range(10))


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="shuffle mode"):
        Order(num_samples=10, seed=0, epoch=0, mode="random")
    with pytest.raises(IndexError):
        Order(num_samples=10, seed=0, epoch=0)[10]


@settings(max_examples=40, deadline=None)
@given(half_bits=st.integers(1, 12), tweak=st.integers(0, 2**40), seed=st.integers(0, 2**31), count=st.integers(0, 300))
def test_tabulated_rounds_are_the_arithmetic_rounds(half_bits, tweak, seed, count):
    """The round functions looked up in tables (small half-words: a cycle-walk's cost is its numpy calls) permute
    exactly as computing them does."""
    keys = _round_keys("k", seed)
    x = np.random.default_rng(seed).integers(0, 4**half_bits, size=count).astype(np.uint64)
    tables = _round_tables(keys, half_bits, tweak)
    assert np.array_equal(_feistel(x, keys, half_bits, tweak, tables), _feistel(x, keys, half_bits, tweak))


@settings(max_examples=15, deadline=None)
@given(half_bits=st.integers(1, 8), seed=st.integers(0, 2**31))
def test_a_tabulated_domain_is_the_computed_permutation(half_bits, seed):
    """The whole Feistel domain tabulated on 16-bit half-words is the permutation computed value by value."""
    keys = _round_keys("k", seed)
    x = np.arange(4**half_bits, dtype=np.uint64)
    assert np.array_equal(_domain_table(keys, half_bits), _feistel(x, keys, half_bits))


def test_the_largest_tabulated_domain_is_the_computed_permutation():
    keys = _round_keys("k", 3)
    x = np.random.default_rng(3).integers(0, 4**WALK_TABLE_HALF_BITS, size=5000).astype(np.uint64)
    assert np.array_equal(_domain_table(keys, WALK_TABLE_HALF_BITS)[x], _feistel(x, keys, WALK_TABLE_HALF_BITS))


ORDERS = {  # sha256 of whole orders computed before the round tables (sdl as of 2026-11-29): checkpoints resume identically
    (5461, "global"): "f2780b6ffd9fa7e0", (16383, "global"): "a91a1cf0ffdbbbdb", (1000003, "global"): "e9b9ec44d89b49ea",
    (70000, "locality"): "f97fefe84dcf66cf", (3, "global"): "e92b80d2ee5ab0f6",
}


@pytest.mark.parametrize("n, mode", sorted(ORDERS))
def test_an_order_never_changes(n, mode):
    ids = Order(num_samples=n, seed=7, epoch=2, key="k", mode=mode)[np.arange(n)]
    assert hashlib.sha256(ids.tobytes()).hexdigest()[:16] == ORDERS[(n, mode)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 70_000), seed=st.integers(0, 2**31), pieces=st.integers(3, 40))
def test_an_order_looked_up_whole_equals_it_looked_up_in_pieces(n, seed, pieces):
    """Half the order or more is walked through a table of the whole Feistel domain, less by Feistel passes: the same
    ids either way, in any order of positions."""
    order = Order(num_samples=n, seed=seed, epoch=1, key="k")
    positions = np.random.default_rng(seed).permutation(n)
    whole = order[positions]  # the tabulated walk
    assert np.array_equal(whole, np.concatenate([order[part] for part in np.array_split(positions, pieces)]))  # the passes
    assert np.array_equal(np.sort(whole), np.arange(n))
