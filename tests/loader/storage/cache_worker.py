"""One rank reading an s3:// dataset through a shared cache folder, for the two-process test.

    python cache_worker.py URL LOCAL CACHE_DIR RANK WORLD_SIZE

Checks every batch against the local copy, then prints {"ids", "misses", "hits", "bytes_fetched"} as JSON.
"""

import json
import sys

import numpy as np
from sdl.loader import TokenWindows, make_loader


def main(url: str, local: str, cache_dir: str, rank: int, world_size: int) -> None:
    ds = TokenWindows(url, seq_len=100, cache_dir=cache_dir, prefetch_steps=4)
    here = TokenWindows(local, seq_len=100)
    loader = make_loader(ds, batch_size=4, seed=3, num_workers=0, rank=rank, world_size=world_size, device="cpu")
    ids = []
    for batch in loader:
        ids += batch["sample_ids"].tolist()
        want = here.__getitems__(batch["sample_ids"].tolist())
        assert np.array_equal(batch["input_ids"].numpy(), want["input_ids"].numpy())
    stats = ds.remote.cache.stats
    print(json.dumps({"ids": ids, "misses": stats.misses, "hits": stats.hits, "bytes_fetched": stats.bytes_fetched}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
