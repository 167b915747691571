"""Laws of a mixture's per-source id lookups (`SourceOrders`): draw d of a source of n samples is its Feistel order's
sample at offset d % n of pass d // n, whatever the blocks the lookup is cut into and the order the draws come in."""

from __future__ import annotations

import copy
import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.data.mixture_ids import SourceOrders
from sdl.loader.sampling.order import Order


def expected(n: int, seed: int, key: str, draws: list[int]) -> list[int]:
    return [int(Order(num_samples=n, seed=seed, epoch=d // n, key=key)[d % n]) for d in draws]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**31), st.integers(1, 4000), st.integers(1, 700),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=60), st.booleans())
def test_ids_are_each_pass_order_whatever_the_blocks(n, seed, pass_block, id_block, draws, run):
    """Any draws (one run of consecutive draws, or scattered over passes and blocks), any block sizes: Order's ids."""
    draws = [draws[0] % (5 * n) + i for i in range(len(draws))] if run else [d % (5 * n) for d in draws]
    orders = SourceOrders([n], ["k"], pass_block, id_block)
    assert orders.ids(0, seed, np.array(draws, dtype=np.int64)).tolist() == expected(n, seed, "k", draws)


def test_one_block_and_many_blocks_agree_and_sources_are_keyed_apart():
    """A run inside one block (the one-take path) and the same draws among others give the same ids; two sources of one
    size are different orders (keyed by their names); a copy and a pickle start empty and give the same ids."""
    orders = SourceOrders([1000, 1000], ["web", "code"], 64, 100)
    across = np.arange(2_150, 2_260, dtype=np.int64)  # pass 2, offsets 150..259: blocks 1 and 2 of 100 offsets
    inside = np.arange(2_110, 2_160, dtype=np.int64)  # pass 2, offsets 110..159: block 1 only
    scattered = np.concatenate([inside, np.array([5, 999, 4_321], dtype=np.int64)])
    assert orders.ids(0, 7, inside).tolist() == orders.ids(0, 7, scattered)[:50].tolist() == expected(1000, 7, "web", inside.tolist())
    assert orders.ids(0, 7, across).tolist() == expected(1000, 7, "web", across.tolist())
    assert orders.ids(1, 7, inside).tolist() == expected(1000, 7, "code", inside.tolist()) != orders.ids(0, 7, inside).tolist()
    for other in (copy.copy(orders), pickle.loads(pickle.dumps(orders))):
        assert not other._blocks and other.ids(1, 7, scattered).tolist() == orders.ids(1, 7, scattered).tolist()


def test_kept_blocks_are_bounded():
    """At most 4 blocks a source are kept, however many passes are read."""
    orders = SourceOrders([50, 70], ["a", "b"], 1000, 10)
    for p in range(40):
        orders.ids(p % 2, 0, np.arange(p * 70, p * 70 + 3, dtype=np.int64))
    assert len(orders._blocks) <= 8


def test_no_draws_no_ids():
    """An empty lookup is an empty answer (Mixture.locate_all of no positions, one source or several)."""
    orders = SourceOrders([10], ["k"])
    assert orders.ids(0, 0, np.empty(0, dtype=np.int64)).tolist() == []
