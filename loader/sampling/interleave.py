"""The mixture interleave: which source position t of a weighted stream draws from, computed, never stored.

The sources are the leaves of a binary tree; a node of weight W splits its positions between its
children in the proportion p = W_left / W. The node's i-th position goes left iff L(i+1) > L(i),
with L(i) = floor(p·i + 1/2) (a Sturmian split): the left child holds L(c) of the node's first c
positions, the right c - L(c), and each within 1/2 of the exact share. Composing splits down the tree
gives source s, and its draw index (how many earlier positions went to s), in O(depth) per position,
vectorised; `counts(t)` gives every source's draws among the first t positions the same way.

Discrepancy: a leaf x of weight w under non-root ancestors a (its parent up to a child of the root)
draws within e of w·t, |e| < (1 + Σ_a w / W_a) / 2; over any K consecutive positions its count is
within `bound` = max over leaves of (1 + Σ_a w / W_a) of w·K. The tree is chosen to minimise that
bound among a few shapes: with up to 4 sources some shape has every leaf under at most one non-root
ancestor, so the bound is <= 2 for any weights; with more sources it is reported (`bound`), and is
< 2 for equal weights of any number of sources (runs of 2^m, 1 + 1/2 + 1/4 + … < 2) and many others. Where it
exceeds 2, a mixture uses the periodic Pfair table instead when the weights allow one (`sdl.loader.sampling.pfair`,
chosen by `sdl.loader.data.mixture_schedule.interleave_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sdl.loader.errors import ConfigError

Tree = Any  # a leaf is a source index (int); a node is a pair (left, right)


def _weight(tree: Tree, weights: tuple[float, ...]) -> float:
    return weights[tree] if isinstance(tree, int) else _weight(tree[0], weights) + _weight(tree[1], weights)


def _balanced(leaves: list[int], weights: tuple[float, ...]) -> Tree:
    """Split the heaviest-first leaves greedily into two bins of near-equal weight, recursively."""
    if len(leaves) == 1:
        return leaves[0]
    bins: tuple[list[int], list[int]] = ([], [])
    totals = [0.0, 0.0]
    for leaf in sorted(leaves, key=lambda s: -weights[s]):
        lighter = 0 if totals[0] <= totals[1] else 1
        bins[lighter].append(leaf)
        totals[lighter] += weights[leaf]
    if not bins[1]:
        bins[1].append(bins[0].pop())
    return (_balanced(bins[0], weights), _balanced(bins[1], weights))


def _huffman(leaves: list[int], weights: tuple[float, ...]) -> Tree:
    nodes = [(weights[s], s) for s in leaves]
    while len(nodes) > 1:
        nodes.sort(key=lambda n: n[0])
        (wa, a), (wb, b) = nodes[0], nodes[1]
        nodes = nodes[2:] + [(wa + wb, (b, a))]
    return nodes[0][1]


def _pairs(leaves: list[int], weights: tuple[float, ...]) -> Tree:
    """Heaviest with lightest, then the middle two: every leaf of 3-4 sources under at most one non-root ancestor."""
    order = sorted(leaves, key=lambda s: -weights[s])
    if len(order) == 3:
        return (order[0], (order[1], order[2]))
    return ((order[0], order[3]), (order[1], order[2]))


def _contiguous(leaves: list[int], weights: tuple[float, ...]) -> Tree:
    """The heaviest-first list split into contiguous runs, each split minimising an upper bound of the tree's
    bound: U(node) = min over splits of max over children C of (heaviest leaf of C) / W_node + U(C)."""
    order = sorted(leaves, key=lambda s: -weights[s])
    prefix = np.concatenate(([0.0], np.cumsum([weights[s] for s in order])))
    best: dict[tuple[int, int], tuple[float, int]] = {}

    def solve(i: int, j: int) -> float:
        if j - i == 1:
            return 0.0
        if (i, j) not in best:
            total = prefix[j] - prefix[i]
            best[(i, j)] = min((max(weights[order[i]] / total + solve(i, k), weights[order[k]] / total + solve(k, j)), k)
                               for k in range(i + 1, j))
        return best[(i, j)][0]

    def build(i: int, j: int) -> Tree:
        if j - i == 1:
            return order[i]
        solve(i, j)
        k = best[(i, j)][1]
        return (build(i, k), build(k, j))

    return build(0, len(order))


def tree_bound(tree: Tree, weights: tuple[float, ...]) -> float:
    """max over leaves of 1 + Σ_{non-root ancestors a} w / W_a: the window discrepancy bound of `tree`."""
    worst = 1.0

    def walk(node: Tree, ancestors: list[float]) -> None:
        nonlocal worst
        if isinstance(node, int):
            worst = max(worst, 1.0 + sum(weights[node] / w for w in ancestors[1:]))
            return
        for child in node:
            walk(child, ancestors + [_weight(node, weights)])

    walk(tree, [])
    return worst


def best_tree(weights: tuple[float, ...]) -> Tree:
    """The candidate shape with the smallest bound over the sources of positive weight."""
    leaves = [s for s, w in enumerate(weights) if w > 0]
    if not leaves:
        raise ConfigError("a mixture needs at least one source of positive weight")
    candidates = [_balanced(leaves, weights), _huffman(leaves, weights)]
    if len(leaves) in (3, 4):
        candidates.append(_pairs(leaves, weights))
    if len(leaves) <= 32:  # O(n^3): a few ms at 32 sources
        candidates.append(_contiguous(leaves, weights))
    return min(candidates, key=lambda t: tree_bound(t, weights))


@dataclass(frozen=True, kw_only=True, slots=True)
class Interleave:
    """Positions of a stream over `len(weights)` sources drawn at `weights` (normalised; zero = never drawn)."""

    weights: tuple[float, ...]
    bound: float = field(init=False)
    _left: np.ndarray = field(init=False, repr=False, compare=False)
    _right: np.ndarray = field(init=False, repr=False, compare=False)
    _share: np.ndarray = field(init=False, repr=False, compare=False)
    _source: np.ndarray = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = float(sum(self.weights))
        if any(not np.isfinite(w) or w < 0 for w in self.weights) or total <= 0:
            raise ConfigError(f"mixture weights are {list(self.weights)}; expected finite numbers >= 0, at least one > 0")
        weights = tuple(float(w) / total for w in self.weights)
        object.__setattr__(self, "weights", weights)
        tree = best_tree(weights)
        object.__setattr__(self, "bound", tree_bound(tree, weights))
        self._flatten(tree, weights)

    def _flatten(self, tree: Tree, weights: tuple[float, ...]) -> None:
        """Node arrays: node 0 is the root; a leaf has source >= 0, an internal node children and a left share."""
        left, right, share, source, depth = [], [], [], [], [0]

        def add(node: Tree, level: int) -> int:
            index = len(source)
            left.append(-1), right.append(-1), share.append(0.0), source.append(node if isinstance(node, int) else -1)
            depth[0] = max(depth[0], level)
            if not isinstance(node, int):
                share[index] = _weight(node[0], weights) / _weight(node, weights)
                left[index] = add(node[0], level + 1)
                right[index] = add(node[1], level + 1)
            return index

        add(tree, 0)
        for name, values, dtype in (("_left", left, np.int64), ("_right", right, np.int64),
                                    ("_share", share, np.float64), ("_source", source, np.int64)):
            object.__setattr__(self, name, np.asarray(values, dtype=dtype))
        object.__setattr__(self, "_depth", depth[0])

    @staticmethod
    def _split(share: Any, count: Any) -> np.ndarray:
        """L(count): how many of a node's first `count` positions go to its left child."""
        return np.floor(np.asarray(share) * np.asarray(count, dtype=np.float64) + 0.5).astype(np.int64)

    def locate(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """(source, draw index within that source) of stream positions (int64 arrays, any shape)."""
        t = np.asarray(positions, dtype=np.int64)
        node = np.zeros(t.shape, dtype=np.int64)
        index = t.copy()
        for level in range(self._depth):
            if level == 0:  # every position starts at the root, an inner node (depth > 0): no masks
                before, i = self._split(self._share[0], index), index
                go_left = self._split(self._share[0], i + 1) > before
                index, node = np.where(go_left, before, i - before), np.where(go_left, self._left[0], self._right[0])
                continue
            inner = self._source[node] < 0
            if not inner.any():
                break
            share = self._share[node[inner]]
            i = index[inner]
            before = self._split(share, i)
            go_left = self._split(share, i + 1) > before
            index[inner] = np.where(go_left, before, i - before)
            node[inner] = np.where(go_left, self._left[node[inner]], self._right[node[inner]])
        return self._source[node], index

    def counts(self, t: int) -> np.ndarray:
        """Draws of every source among the first `t` positions (int64 [num_sources]); they sum to t."""
        out = np.zeros(len(self.weights), dtype=np.int64)
        stack = [(0, int(t))]
        while stack:
            node, count = stack.pop()
            if self._source[node] >= 0:
                out[self._source[node]] = count
                continue
            to_left = int(self._split(self._share[node], count))
            stack += [(int(self._left[node]), to_left), (int(self._right[node]), count - to_left)]
        return out

    def positions_for(self, draws: Any) -> int:
        """The fewest positions t at which some source s has drawn `draws[s]` (sources of weight 0 ignored)."""
        draws = np.asarray(draws, dtype=np.int64)
        live = np.asarray(self.weights) > 0
        with np.errstate(over="ignore"):  # a weight of ~1e-308 divides to inf; the least is finite (some weight >= 1/sources)
            low, high = 0, int(np.min(draws[live] / np.asarray(self.weights)[live])) + 4
        while low < high:  # smallest t with counts(t)[s] >= draws[s] for some live s
            mid = (low + high) // 2
            if np.any(self.counts(mid)[live] >= draws[live]):
                high = mid
            else:
                low = mid + 1
        return low
