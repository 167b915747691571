"""Laws of the rank-slicing rule: each step's W·B offsets are split into W contiguous slices; the real-sample count
is the count of a rank's offsets below `remaining`, also for batch sizes no array could hold."""

import numpy as np
from sdl.loader.sampling.slicing import rank_offsets, rank_real_samples


def test_the_ranks_of_a_step_tile_its_offsets_in_rank_order():
    for world_size in range(1, 5):
        for batch_size in range(1, 5):
            steps = np.arange(3)
            tiled = np.concatenate([rank_offsets(steps, r, world_size, batch_size) for r in range(world_size)], axis=1)
            assert tiled.reshape(-1).tolist() == list(range(3 * world_size * batch_size))


def test_real_samples_count_the_offsets_below_remaining():
    """Over the steps of a plan: only its last step can reach past `remaining` (padding)."""
    for world_size in range(1, 4):
        for batch_size in range(1, 4):
            for steps in range(1, 4):
                for remaining in range((steps - 1) * world_size * batch_size + 1, steps * world_size * batch_size + 2):
                    for rank in range(world_size):
                        offsets = rank_offsets(np.arange(steps), rank, world_size, batch_size)
                        expected = int((offsets < remaining).sum())
                        assert rank_real_samples(remaining, steps, rank, world_size, batch_size) == expected


def test_a_batch_no_array_could_hold_is_counted_not_allocated():
    batch_size = 2**59  # 4 EiB as int64 offsets: allocating the last step's offsets raised ValueError
    remaining = 2**62 - 1  # 4 steps of 2 ranks, the last one padded by a sample on rank 1
    assert rank_real_samples(remaining, 4, 0, 2, batch_size) == 4 * batch_size
    assert rank_real_samples(remaining, 4, 1, 2, batch_size) == 4 * batch_size - 1
