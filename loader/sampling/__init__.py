"""sdl.loader.sampling: the epoch order (keyed Feistel bijection), LoaderState, the one slicing rule, the sampler, merges."""

from sdl.loader.sampling.interleave import Interleave
from sdl.loader.sampling.merge import merge_states, plan_for, reshard_state
from sdl.loader.sampling.order import MODES, Order, feistel_permute
from sdl.loader.sampling.sampler import (
    ElasticSampler,
    EpochPlan,
    SampleBatch,
    check_compatible,
    plan_epoch,
    shuffle_mode,
)
from sdl.loader.sampling.slicing import rank_offsets, rank_real_samples
from sdl.loader.sampling.state import (
    STATE_FORMAT,
    STATE_VERSION,
    STREAM_KEYS,
    LoaderState,
    is_state_dict,
)

__all__ = [
    "MODES", "STATE_FORMAT", "STATE_VERSION", "STREAM_KEYS", "ElasticSampler", "EpochPlan", "Interleave", "LoaderState", "Order",
    "SampleBatch", "check_compatible", "feistel_permute", "is_state_dict", "merge_states", "plan_epoch", "plan_for",
    "rank_offsets", "rank_real_samples", "reshard_state", "shuffle_mode",
]
