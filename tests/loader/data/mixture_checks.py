"""Checks shared by the mixture gather tests: the general route's batch, and batch equality field by field."""

import torch
from sdl.loader.data.mixture_gather import assemble_batch, batch_key
from sdl.loader.data.mixture_phase import is_phase


def assembled(mixture, indices):
    """The general route's batch of `indices`: each source's own batch, its rows copied into place."""
    context = getattr(indices, "context", None)
    positions, key, _, _ = batch_key(indices, is_phase(context))
    source, ids = mixture.locate(positions, seed=key.seed, epoch=key.epoch, context=context)
    return assemble_batch(mixture, positions, source, ids, key)


def assert_same(batch, expected):
    assert list(batch) == list(expected)
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert batch[name].dtype == value.dtype and torch.equal(batch[name], value), name
        else:
            assert batch[name] == value, name
