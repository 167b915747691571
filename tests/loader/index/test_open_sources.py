"""The per-process LRU of opened sources: bounded, counted, and still serving when the process runs out of file
descriptors (a corpus of more shards than `ulimit -n` allows: the older half closed, then one more try)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import weakref

import pytest
from sdl.loader.errors import InputError
from sdl.loader.index.handles import OpenSources


def test_at_most_max_open_are_held_and_every_close_is_counted():
    opened = []
    lru = OpenSources(3, lambda i: opened.append(i) or [i])
    closed = OpenSources.closed
    for i in [0, 1, 2, 0, 3, 4, 0]:
        assert lru.get(i) == [i]
    assert list(lru.items) == [3, 4, 0] and opened == [0, 1, 2, 3, 4] and lru.evictions == 2
    assert OpenSources.closed - closed == 2
    assert lru.holds_all({3: lru.items[3]}) and not lru.holds_all({1: [1]}) and not lru.holds_all({3: [3]})


def emfile(_: int):
    raise OSError(24, "Too many open files")


def test_out_of_descriptors_closes_the_older_half_and_tries_once_more(monkeypatch):
    """Every LRU of the process closes its older half (here two: the one opening, and another holding descriptors)."""
    monkeypatch.setattr(OpenSources, "every", weakref.WeakSet())  # other tests' LRUs stay as they are
    calls = {"n": 0}

    def open_source(i: int):
        calls["n"] += 1
        if i == 9 and calls["n"] == 5:  # the first try of source 9 finds no descriptor left
            emfile(i)
        return [i]

    lru, other = OpenSources(100, open_source), OpenSources(100, lambda i: [i])
    for i in range(4):
        lru.get(i)
        other.get(i)
    with pytest.warns(RuntimeWarning, match="out of file descriptors with 4 sources open here"):
        assert lru.get(9) == [9]
    assert list(lru.items) == [2, 3, 9] and lru.evictions == 2 and list(other.items) == [2, 3] and other.max_open == 3


def test_out_of_descriptors_even_then_says_what_to_do(monkeypatch):
    monkeypatch.setattr(OpenSources, "every", weakref.WeakSet())
    lru = OpenSources(100, emfile)
    with pytest.raises(InputError, match=r"out of file descriptors opening source 7 .*lower max_open_shards .*ulimit -n"):
        lru.get(7)
    other = OpenSources(100, lambda i: (_ for _ in ()).throw(OSError(2, "No such file")))
    with pytest.raises(FileNotFoundError):
        other.get(1)


SCRIPT = """
import os, resource, sys
import numpy as np
from sdl.loader import Mixture, TokenWindows, make_loader
ds = TokenWindows(sys.argv[1], seq_len=16)
assert ds.max_open_shards == len(ds.index.sources) == 300  # every shard, by default
used = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 60, used + 60))  # room for ~60 maps, not 300
seen = []
for batch in make_loader(ds, 8, seed=5, num_workers=0, device="cpu"):
    starts = (batch["sample_ids"].numpy() + ds._windows.start) * ds.stride
    assert (batch["input_ids"].numpy() == (starts[:, None] + np.arange(16)) % 1000).all()
    seen += batch["sample_ids"].tolist()
assert len(set(seen)) == len(seen) == len(ds) - len(ds) % 8 and max(seen) < len(ds)  # each window at most once
sources = [TokenWindows(sys.argv[2], seq_len=16), TokenWindows(sys.argv[3], seq_len=16)]
mixed = 0
for batch in make_loader(Mixture({"a": sources[0], "b": sources[1]}), 8, seed=5, shuffle=False, num_workers=0, device="cpu"):
    for row, (s, i) in enumerate(zip(batch["source"].tolist(), batch["source_ids"].tolist())):
        start = (i + sources[s]._windows.start) * sources[s].stride
        assert (batch["input_ids"][row].numpy() == (start + np.arange(16)) % 1000).all()
        mixed += 1
print("ok", ds._open.evictions > 0, mixed > 600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts descriptors in /proc/self/fd")
def test_a_corpus_of_more_shards_than_descriptors_reads_exactly_once(tmp_path):
    """300 shards, default max_open_shards (every shard), a descriptor limit of ~60 more than in use: a global shuffle
    reads every window exactly once, exact, and shards were closed to make room; so does a mixture of two sources of
    150 shards each (every sample its source's window)."""
    from sdl.prepare.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "ds", num_tokens=300 * 40, tokens_per_shard=40, vocab_size=1000)
    for name in ("a", "b"):
        write_synthetic_dataset(tmp_path / name, num_tokens=150 * 40, tokens_per_shard=40, vocab_size=1000)
    folders = [str(tmp_path / name) for name in ("ds", "a", "b")]
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), *folders], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["ok", "True", "True"], done.stderr[-2000:]


def test_a_global_shuffle_over_more_shards_than_stay_open_is_warned_about(tmp_path):
    """make_loader warns, naming the dataset, its shard count and the fix, when a global shuffle (or a mixture, whose
    sources always draw one) reads more shards than `max_open_shards`; not for other shuffles or a corpus that fits."""
    import warnings

    import torch
    from sdl.loader import Mixture, TokenWindows, make_loader
    from sdl.prepare.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "ds", num_tokens=30 * 40, tokens_per_shard=40, vocab_size=1000)
    crowded, roomy = TokenWindows(tmp_path / "ds", seq_len=8, max_open_shards=8), TokenWindows(tmp_path / "ds", seq_len=8)
    with pytest.warns(RuntimeWarning, match=r"ds has 30 shards, more than max_open_shards=8: .*pass max_open_shards=30"):
        make_loader(crowded, 4, num_workers=0, device="cpu")
    with pytest.warns(RuntimeWarning, match=r"mixture source 'a' \(.*ds\) has 30 shards"):
        make_loader(Mixture({"a": crowded, "b": roomy}), 4, shuffle=False, num_workers=0, device="cpu")
    nested = Mixture({"outer": Mixture({"a": roomy, "inner": crowded}), "b": roomy})
    with pytest.warns(RuntimeWarning, match=r"mixture source 'outer/inner' \(.*ds\) has 30 shards"):
        make_loader(nested, 4, shuffle=False, num_workers=0, device="cpu")

    class Listed:  # any dataset may keep a `sources` of its own
        identity, sources = "listed", ["a.txt", "b.txt"]

        def __len__(self):
            return 8

        def __getitems__(self, ids):
            return {"x": torch.tensor(ids)}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dataset, shuffle in ((crowded, False), (crowded, "locality"), (roomy, True), (Mixture({"b": roomy}), False),
                                 (Mixture({"o": Mixture({"b": roomy, "c": roomy})}), False),
                                 (Listed(), True)):
            make_loader(dataset, 4, shuffle=shuffle, num_workers=0, device="cpu")


TIGHT = """
import os, resource, sys
import numpy as np
from sdl.loader import TokenWindows
ds = TokenWindows(sys.argv[1], seq_len=16, stride=11)
ids = [i * 37 + 1 for i in range(12)]  # 12 windows in 12 different shards
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
others = []
try:
    while True:
        others.append(os.open("/dev/null", os.O_RDONLY))  # the process's every other descriptor taken
except OSError:
    pass
for fd in others[-8:]:
    os.close(fd)  # 8 free: fewer than the batch's shards
for batch_ids in ([i] for i in ids):
    ds.__getitems__(batch_ids)  # 8 maps into the LRU: the header read of the next shard finds no descriptor left
inside = [i for i in range(0, 1600, 7) if (11 * i) % 37 + 17 <= 37]
inside = list({(11 * i) // 37: i for i in inside}.values())[:6]  # windows inside 6 other shards
across = next(i for i in range(1600, 1800) if (11 * i) % 37 + 17 > 37)  # then one across two shards
for batch_ids in (ids, inside + [across]):
    batch = ds.__getitems__(batch_ids)
    starts = (np.array(batch_ids) + ds._windows.start) * ds.stride
    assert (batch["input_ids"].numpy() == (starts[:, None] + np.arange(16)) % 1000).all()
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts descriptors in /proc/self/fd")
def test_a_batch_over_more_shards_than_free_descriptors_is_read_and_no_header_is_called_corrupt(tmp_path):
    """8 descriptors free, a batch of 12 windows in 12 shards: the batch lets go of the maps it took and reads on (no
    OutOfDescriptors), and a shard whose header cannot be opened for want of a descriptor is not reported corrupt."""
    from sdl.prepare.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "ds", num_tokens=20_000, tokens_per_shard=37, vocab_size=1000)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(TIGHT), str(tmp_path / "ds")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-2000:]


def test_no_descriptor_left_is_not_a_corrupt_header(monkeypatch, tmp_path):
    import builtins

    from sdl.loader.format.tokens import read_npy_header

    def no_descriptor(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(builtins, "open", no_descriptor)
    with pytest.raises(OSError, match="Too many open files"):
        read_npy_header(tmp_path / "shard-000000.npy")


def test_by_default_every_local_shard_stays_open_as_far_as_descriptors_allow(monkeypatch):
    """max_open_shards=None: every shard of a local corpus (no global shuffle reopens any), up to LOCAL_OPEN_SHARDS
    maps and what the hard descriptor limit leaves (at least 64); an object store's few; a given value as given."""
    from sdl.loader.data import shard_access
    from sdl.loader.data.shard_access import LOCAL_OPEN_SHARDS, REMOTE_OPEN_SHARDS, open_shards_limit

    assert open_shards_limit(None, None, 300) == 300 and open_shards_limit(None, None, 1) == 1
    assert open_shards_limit(None, object(), 300) == REMOTE_OPEN_SHARDS and open_shards_limit(5, None, 300) == 5
    monkeypatch.setattr(shard_access, "descriptor_room", lambda: 10**6)
    assert open_shards_limit(None, None, 10**6) == LOCAL_OPEN_SHARDS
    monkeypatch.setattr(shard_access, "descriptor_room", lambda: 768)  # a hard limit of 1,024 descriptors
    assert open_shards_limit(None, None, 5000) == 768
    monkeypatch.setattr(shard_access, "descriptor_room", lambda: 1)  # a tiny hard limit: as many as before, 64
    assert open_shards_limit(None, None, 5000) == 64 and open_shards_limit(None, None, 20) == 20


SPANNED = """
import os, resource, sys
import numpy as np
from sdl.loader import TokenWindows
from sdl.loader.sampling.sampler import ElasticSampler
ds = TokenWindows(sys.argv[1], seq_len=4, stride=5)  # windows across shards in most steps
steps = list(ElasticSampler.for_dataset(ds, 16, seed=0, shuffle=True))
def check(k):
    batch = ds.__getitems__(steps[k])
    starts = (np.array(list(steps[k])) + ds._windows.start) * ds.stride
    assert (batch["input_ids"].numpy() == (starts[:, None] + np.arange(4)) % 500).all()
check(0)  # the chunk's span view maps its shards
used = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, used + 8))  # then hardly a descriptor to spare
for k in range(1, len(steps)):
    check(k)
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts descriptors in /proc/self/fd")
def test_a_span_view_lets_go_of_its_maps_when_a_window_across_shards_finds_no_descriptor(tmp_path):
    """A step gathered through the chunk's span view reads its windows across two shards afterwards; when that read
    runs out of descriptors, the view's maps are let go (the LRUs' owners drop the view, the read holds it no more)."""
    from sdl.prepare.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "ds", num_tokens=3_000, tokens_per_shard=8, vocab_size=500)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SPANNED), str(tmp_path / "ds")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-2000:]

