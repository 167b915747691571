"""ZarrSamples and ArrowRows go through the same order, sampler, state and workers as token windows:
exactly once across a resume on another world size, and each sample's content belongs to its id."""

import numpy as np
import pytest
from sdl.loader import ArrowRows, ZarrSamples, make_loader


def zarr_dataset(root):
    import zarr

    start = 0
    for i, n in enumerate((37, 20, 50)):
        group = zarr.open_group(str(root / f"run{i}.zarr"), mode="w")
        images = group.create_array("images", shape=(n, 2, 2), chunks=(8, 2, 2), dtype="float32")
        images[:] = np.arange(start, start + n, dtype="float32")[:, None, None] + np.zeros((2, 2), "float32")
        group.create_array("labels", shape=(n,), chunks=(16,), dtype="int64")[:] = np.arange(start, start + n)
        start += n
    return ZarrSamples(root)


def arrow_dataset(root):
    import datasets

    rows = 107
    datasets.Dataset.from_dict({"n": list(range(rows)), "text": [f"row {i}" for i in range(rows)]}).save_to_disk(
        str(root / "saved"), num_shards=3)
    return ArrowRows(root / "saved")


def _check_content(name, batch):
    ids = batch["sample_ids"].tolist()
    if name == "zarr":
        assert batch["labels"].tolist() == ids and batch["images"][:, 1, 1].tolist() == [float(i) for i in ids]
    else:
        assert batch["n"].tolist() == ids and batch["text"] == [f"row {i}" for i in ids]


@pytest.mark.parametrize("name", ["zarr", "arrow"])
def test_exactly_once_across_a_resume_on_another_world_size(name, tmp_path):
    dataset = zarr_dataset(tmp_path) if name == "zarr" else arrow_dataset(tmp_path)
    seen, state = [], None
    for world_size, batch_size, num_workers, steps in [(3, 4, 2, 4), (2, 5, 0, None)]:
        for rank in range(world_size):
            loader = make_loader(dataset, batch_size=batch_size, seed=5, num_workers=num_workers, rank=rank,
                                 world_size=world_size, device="cpu")
            if state is not None:
                loader.load_state_dict(state)
            for step, batch in enumerate(loader, start=1):
                _check_content(name, batch)
                seen += batch["sample_ids"].tolist()
                if step == steps:
                    break
        state = loader.state_dict()
    assert len(seen) == len(set(seen)) and len(dataset) - len(seen) < 2 * 5
    assert state["epoch"] == 1
