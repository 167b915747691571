"""What frameworks read from SdlLoader: len() is a whole epoch wherever the cursor stands, plan() the rest, and
set_epoch never drops the epoch in progress without being asked to."""

import pytest
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import ConfigError


@pytest.mark.parametrize("num_workers", [0, 2])
def test_len_is_the_whole_epoch_and_set_epoch_guards_the_epoch_in_progress(token_dataset, num_workers):
    dataset = TokenWindows(token_dataset(num_tokens=3_000, vocab_size=1000), seq_len=16)  # 187 windows
    loader = make_loader(dataset, batch_size=4, global_batch_size=8, num_workers=num_workers, rank=0, world_size=1, device="cpu")
    assert len(loader) == 187 // 8 * 2 == loader.plan().steps and loader.accumulation_steps == 2
    it = iter(loader)
    seen = [next(it) for _ in range(5)]
    assert len(loader) == 46 and loader.plan().steps == 41
    resumed = make_loader(dataset, batch_size=4, global_batch_size=8, num_workers=0, rank=0, world_size=1, device="cpu")
    resumed.load_state_dict(loader.state_dict())
    assert len(resumed) == 46 and resumed.plan().steps == 41
    with pytest.raises(ConfigError, match=r"set_epoch\(1\) while epoch 0 is in progress"):
        resumed.set_epoch(1)
    resumed.set_epoch(0)  # the epoch in progress: continues
    rest = list(resumed)
    ids = [int(x) for b in seen + rest for x in b["sample_ids"]]
    assert len(rest) == 41 and len(ids) == len(set(ids)) == 184 and resumed.epoch == 1
    resumed.set_epoch(1)  # epoch 0 is over: nothing is dropped
    next(iter(resumed))
    resumed.set_epoch(3, skip_rest=True)
    assert resumed.epoch == 3 and resumed.plan().steps == 46


def test_a_hosts_set_epoch_on_the_loaders_sampler_moves_the_loader(token_dataset):
    # Lightning moves epochs through `loader.sampler.set_epoch(e)`; the loader's next iteration is epoch e's order (it
    # reloaded its own state into the sampler, and replayed epoch 0's order as epoch 1), under the loader's own rule.
    dataset = TokenWindows(token_dataset(num_tokens=3_000, vocab_size=1000), seq_len=16)

    def ids(loader):
        return [int(x) for batch in loader for x in batch["sample_ids"]]

    reference = make_loader(dataset, batch_size=4, num_workers=0, rank=0, world_size=1, device="cpu")
    epochs = [ids(reference), ids(reference)]
    host = make_loader(dataset, batch_size=4, num_workers=0, rank=0, world_size=1, device="cpu")
    host.sampler.set_epoch(1)
    assert host.epoch == 1 and ids(host) == epochs[1] != epochs[0]
    next(iter(host))  # epoch 2 in progress
    with pytest.raises(ConfigError, match=r"set_epoch\(4\) while epoch 2 is in progress"):
        host.sampler.set_epoch(4)
