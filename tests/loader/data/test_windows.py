"""TokenWindows: every window and label exact (token at p is p % vocab), shifts, layouts, splits, pickling, LRU, errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import sdl.loader.data.shard_access as shard_access
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sdl.loader.data.split import count_windows
from sdl.loader.data.windows import TokenWindows, host_dtype, proper_divisors
from sdl.loader.errors import ConfigError, InputError
from sdl.prepare.synthetic import write_synthetic_dataset

NUM_TOKENS = 600
# (name, tokens_per_shard, vocab_size, dtype): tiny shards make most windows cross boundaries, even several.
DATASETS = [("u16_small", 7, 251, "uint16"), ("u16_mid", 64, 65536, "uint16"), ("u32_mid", 100, 100_000, "uint32"),
            ("u32_one", 1000, 70_000, "uint32")]


class Indices(list):
    """A batch of sample ids carrying the sampler's attributes."""

    def __init__(self, ids, seed=None, epoch=None, position=None):
        super().__init__(ids)
        if seed is not None:
            self.seed, self.epoch, self.position = seed, epoch, position


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("windows")
    out = {}
    for name, per_shard, vocab, dtype in DATASETS:
        write_synthetic_dataset(root / name, num_tokens=NUM_TOKENS, tokens_per_shard=per_shard, vocab_size=vocab, dtype=dtype)
        out[name] = (root / name, vocab)
    return out


def expected(ds: TokenWindows, vocab: int, sample_ids, shift: int) -> tuple[np.ndarray, np.ndarray]:
    starts = (np.asarray(sample_ids, dtype=np.int64) + ds._windows.start) * ds.stride
    positions = starts[:, None] + np.arange(ds.seq_len)
    return positions % vocab, (positions + shift) % vocab


def check_batch(ds, vocab, ids, batch, shift):
    inputs, labels = expected(ds, vocab, ids, shift)
    assert batch["input_ids"].dtype == torch.int64 and batch["labels"].dtype == torch.int64  # what cross_entropy takes
    assert batch["input_ids"].is_contiguous() and batch["labels"].is_contiguous()
    np.testing.assert_array_equal(batch["input_ids"].reshape(len(ids), -1).numpy(), inputs)
    np.testing.assert_array_equal(batch["labels"].reshape(len(ids), -1).numpy(), labels)
    assert batch["sample_ids"].dtype == torch.int64 and batch["sample_ids"].tolist() == list(ids)


@pytest.mark.parametrize("name", [d[0] for d in DATASETS])
def test_every_window_of_a_small_grid_is_exact(datasets, name):
    path, vocab = datasets[name]
    for seq_len in (1, 2, 6, 16, 40):
        for stride in sorted({1, 3, seq_len}):
            for shift in proper_divisors(seq_len) + [seq_len]:
                ds = TokenWindows(path, seq_len=seq_len, stride=stride, shift=shift)
                assert len(ds) == count_windows(NUM_TOKENS, seq_len, stride, shift)
                ids = list(range(len(ds)))
                check_batch(ds, vocab, ids, ds.__getitems__(ids), shift)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from([d[0] for d in DATASETS]), seq_len=st.integers(1, 64), stride=st.integers(1, 70),
       split=st.sampled_from(["train", "val", "all"]), split_rate=st.floats(0.3, 0.9))
def test_any_batch_equals_its_samples_stacked_and_is_exact(datasets, data, name, seq_len, stride, split, split_rate):
    path, vocab = datasets[name]
    shift = data.draw(st.sampled_from(proper_divisors(seq_len) + [seq_len]))
    try:
        ds = TokenWindows(path, seq_len=seq_len, stride=stride, shift=shift, split=split, split_rate=split_rate)
    except (InputError, ConfigError):
        return  # too short for a window, or an empty split: covered by the error tests
    ids = data.draw(st.lists(st.integers(0, len(ds) - 1), min_size=1, max_size=12))
    batch = ds.__getitems__(ids)
    check_batch(ds, vocab, ids, batch, shift)
    samples = [ds[i] for i in ids]
    for key in ("input_ids", "labels", "sample_ids"):
        assert torch.equal(torch.stack([s[key] for s in samples]), batch[key])


def test_uint16_ids_above_int16_range_stay_positive(tmp_path):
    write_synthetic_dataset(tmp_path / "d", num_tokens=70_000, tokens_per_shard=65_000, vocab_size=65536, dtype="uint16")
    ds = TokenWindows(tmp_path / "d", seq_len=16, stride=8)
    ids = list(range(8185, 8195))  # windows around position 65,536 (wrap) and 65,000 (shard boundary)
    check_batch(ds, 65536, ids, ds.__getitems__(ids), 1)
    assert int(ds.__getitems__(ids)["input_ids"].max()) == 65535
    narrow = ds.with_host_dtype(ds.wire_dtype).__getitems__(ids)  # what make_loader sends from workers / to a GPU
    assert narrow["input_ids"].dtype == torch.int32 and torch.equal(narrow["input_ids"].long(), ds.__getitems__(ids)["input_ids"])
    assert host_dtype(2**31) == np.int32 and host_dtype(2**31 + 1) == np.int64
    assert host_dtype(0, "uint16") == np.int32 and host_dtype(0, "uint32") == np.int64  # unknown vocabulary


def test_random_shift_is_a_proper_divisor_drawn_from_seed_epoch_position(datasets):
    path, vocab = datasets["u16_small"]
    ds = TokenWindows(path, seq_len=12, stride=12, shift="random")
    assert ds.shift_choices == [1, 2, 3, 4, 6]
    assert len(ds) == count_windows(NUM_TOKENS, 12, 12, 6)
    drawn = set()
    for position in range(40):
        ids = Indices([1, 5, 9], seed=3, epoch=2, position=position)
        batch = ds.__getitems__(ids)
        shift = batch["shift"]
        rng = np.random.default_rng((3, 2, position))
        assert shift == ds.shift_choices[int(rng.integers(5))]
        assert ds.__getitems__(Indices([0, 2], seed=3, epoch=2, position=position))["shift"] == shift  # every rank alike
        check_batch(ds, vocab, list(ids), batch, shift)
        drawn.add(shift)
    assert drawn == {1, 2, 3, 4, 6}
    plain = ds.__getitems__([7, 4])
    assert plain["shift"] == ds.batch_shift(Indices([7, 4], seed=0, epoch=0, position=4))
    single = ds[3]
    assert single["shift"] == 1 and single["input_ids"].shape == (12,)
    check_batch(ds, vocab, [3], {k: v[None] for k, v in single.items() if k != "shift"}, 1)


def test_grouped_layout_chunks_by_shift_and_labels_are_the_next_chunk(datasets):
    path, vocab = datasets["u32_mid"]
    ds = TokenWindows(path, seq_len=12, stride=5, shift=4, layout="grouped")
    batch = ds.__getitems__([0, 3, 50])
    assert batch["input_ids"].shape == (3, 3, 4) and batch["labels"].shape == (3, 3, 4)
    assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])
    check_batch(ds, vocab, [0, 3, 50], batch, 4)
    rand = TokenWindows(path, seq_len=12, stride=12, shift="random", layout="grouped")
    for position in range(10):
        batch = rand.__getitems__(Indices([0, 1], seed=0, epoch=0, position=position))
        assert batch["input_ids"].shape == (2, 12 // batch["shift"], batch["shift"])
        assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])


@pytest.mark.parametrize("seq_len,stride,shift", [(16, 16, 1), (16, 4, 2), (10, 3, "random"), (8, 20, 8)])
def test_train_and_val_never_share_a_token(datasets, seq_len, stride, shift):
    path, _ = datasets["u32_mid"]  # vocab > NUM_TOKENS: token value == global position
    common = dict(seq_len=seq_len, stride=stride, shift=shift, split_rate=0.7)
    train, val = TokenWindows(path, split="train", **common), TokenWindows(path, split="val", **common)
    everything = TokenWindows(path, split="all", **common)
    assert 0 < len(train) and 0 < len(val) and len(train) + len(val) <= len(everything)

    def covered(ds):
        max_shift = max(ds.shift_choices)
        starts = (np.arange(len(ds)) + ds._windows.start) * stride
        return set((starts[:, None] + np.arange(seq_len + max_shift)).ravel().tolist())

    assert not covered(train) & covered(val)
    train_tokens = set(train.__getitems__(list(range(len(train))))["labels"].ravel().tolist())
    val_tokens = set(val.__getitems__(list(range(len(val))))["input_ids"].ravel().tolist())
    assert not train_tokens & val_tokens


def test_pickling_drops_open_shards_and_the_copy_works(datasets):
    path, vocab = datasets["u16_small"]
    ds = TokenWindows(path, seq_len=10, stride=7, shift=2)
    first = ds.__getitems__([0, 20, 40])
    assert ds.num_open_shards > 0
    payload = pickle.dumps(ds)
    assert b"memmap" not in payload
    copy = pickle.loads(payload)
    assert copy.num_open_shards == 0 and ds.num_open_shards > 0
    assert copy.identity == ds.identity and len(copy) == len(ds)
    for key in ("input_ids", "labels", "sample_ids"):
        assert torch.equal(copy.__getitems__([0, 20, 40])[key], first[key])


def test_workers_of_a_dataloader_get_a_working_copy(datasets):
    path, vocab = datasets["u32_mid"]
    ds = TokenWindows(path, seq_len=8, stride=8)
    ds[0]  # an open shard in the parent must not travel
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, collate_fn=torch.utils.data.default_convert,
                                         multiprocessing_context="spawn")
    batches = list(loader)
    assert len(batches) == -(-len(ds) // 4)
    check_batch(ds, vocab, list(range(4)), batches[0], 1)


def test_open_shards_stay_within_the_lru_bound(datasets, monkeypatch):
    path, vocab = datasets["u16_small"]  # 86 shards of 7 tokens
    opened = []
    real = shard_access.open_shard
    monkeypatch.setattr(shard_access, "open_shard", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    ds = TokenWindows(path, seq_len=20, stride=9, max_open_shards=3)
    assert not opened  # construction reads no token data
    for i in range(len(ds)):
        check_batch(ds, vocab, [i], ds.__getitems__([i]), 1)
        assert ds.num_open_shards <= 3
    wide = ds.__getitems__(list(range(0, len(ds), 5)))  # one batch touching many more shards than the bound
    check_batch(ds, vocab, list(range(0, len(ds), 5)), wide, 1)
    assert ds.num_open_shards <= 3
    roomy = TokenWindows(path, seq_len=20, stride=9, max_open_shards=8)
    roomy.__getitems__([len(roomy) - 1])
    count = len(opened)
    roomy.__getitems__([len(roomy) - 1, len(roomy) - 1])
    assert len(opened) == count  # the recently used shards are still open


def test_identity_and_describe(datasets):
    path, _ = datasets["u32_mid"]
    base = dict(seq_len=8, stride=8, shift=1, split="train", split_rate=0.5, layout="flat")
    ds = TokenWindows(path, **base)
    assert ds.identity == TokenWindows(path, **base).identity and len(ds.identity) == 32
    for change in (dict(seq_len=16), dict(stride=4), dict(shift=2), dict(split="val"), dict(split_rate=0.6), dict(layout="grouped"),
                   dict(shift="random")):
        assert TokenWindows(path, **{**base, **change}).identity != ds.identity, change
    other, _ = datasets["u32_one"]
    assert TokenWindows(other, **base).identity != ds.identity
    info = json.loads(json.dumps(ds.describe()))
    assert info == {"kind": "tokens", "path": str(path), "seq_len": 8, "stride": 8, "shift": 1, "split": "train",
                    "split_rate": 0.5, "num_samples": len(ds), "tokens_per_sample": 8}
    assert ds.tokens_per_sample == 8


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(seq_len=0), ConfigError, "seq_len is 0, expected a positive integer"),
    (dict(seq_len=8, stride=0), ConfigError, "stride is 0"),
    (dict(seq_len=8, shift=3), ConfigError, "expected a divisor of seq_len=8"),
    (dict(seq_len=8, shift=0), ConfigError, "expected a divisor"),
    (dict(seq_len=8, shift="sometimes"), ConfigError, "or 'random'"),
    (dict(seq_len=1, shift="random"), ConfigError, "has none; use seq_len >= 2"),
    (dict(seq_len=8, layout="stacked"), ConfigError, "layout is 'stacked'"),
    (dict(seq_len=8, split="test"), ConfigError, "split is 'test'"),
    (dict(seq_len=8, split="train", split_rate=1.5), ConfigError, "split_rate is 1.5"),
    (dict(seq_len=8, split="val", split_rate=1.0), ConfigError, "holds none of the"),
    (dict(seq_len=600), InputError, "one window needs seq_len + shift = 601"),
    (dict(seq_len=8, max_open_shards=0), ConfigError, "max_open_shards is 0"),
    (dict(seq_len=8, doc_starts=True), ConfigError, "doc_starts"),
    (dict(seq_len=8, split="train", split_rate="0.9"), ConfigError, "split_rate is '0.9'"),
])
def test_bad_arguments_are_refused_with_a_message(datasets, kwargs, error, words):
    path, _ = datasets["u16_mid"]
    with pytest.raises(error, match=words.replace("(", r"\(").replace("+", r"\+")):
        TokenWindows(path, **kwargs)


def test_out_of_range_samples_raise_index_error(datasets):
    path, vocab = datasets["u16_mid"]
    ds = TokenWindows(path, seq_len=8)
    with pytest.raises(IndexError):
        ds.__getitems__([0, len(ds)])
    with pytest.raises(IndexError):
        ds[len(ds)]
    check_batch(ds, vocab, [len(ds) - 1], {k: v[None] for k, v in ds[-1].items()}, 1)
    with pytest.raises(InputError):
        TokenWindows(path.parent / "missing", seq_len=8)
    for bad in (2.5, True, "3"):  # not read as sample 2, 1 or a string index
        with pytest.raises(TypeError, match="sample ids are integers"):
            ds[bad]
    with pytest.raises(ConfigError, match="path is None"):
        TokenWindows(None, seq_len=8)


def test_a_negative_seed_draws_random_shifts_reproducibly(token_dataset):
    # Any integer is a seed (make_loader checks no sign); numpy's generators take non-negative entropy only.
    from sdl.loader import make_loader

    ds = TokenWindows(token_dataset(num_tokens=4_000, vocab_size=1000), seq_len=16, shift="random")

    def labels(seed):
        return [b["labels"].tolist() for b in make_loader(ds, 4, seed=seed, num_workers=0, device="cpu", rank=0, world_size=1)]

    assert labels(-5) == labels(-5) != labels(5)
