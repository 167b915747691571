"""TokenWindows(doc_starts=True): position_ids against a brute force over the whole stream of a real `sdl prepare` output."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from sdl.loader import TokenWindows, make_loader
from sdl.loader.errors import ConfigError, FormatError
from sdl.loader.index import build_index
from sdl.loader.index.join import join_jobs
from sdl.loader.index.validation import validate_dataset
from sdl.prepare import PrepareConfig, load_tokenizer, prepare

TOKENS_PER_SHARD = 64
WORDS = ["the", "data", "loader", "tökens", "shard", "ünïcode", "✓", "résumé", "def", "return", "naïve", "数据", "x=1;"]


def make_texts(specials: int) -> list[str]:
    """Documents of varied lengths: the first exactly one shard long (so the second starts at a shard boundary),
    some shorter than any window, some spanning many shards. "the" repeated is one token a word."""
    rng = random.Random(7)
    words = [64 - specials, 1, 2, 900, 3, 130, 5, 1, 400, 63 - specials, 1, 250, 7, 1500, 2, 40]
    texts = [" ".join(["the"] * n) for n in words]
    texts[5::3] = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in words[5::3]]
    return texts


def write_dataset(root, texts, name, **options):
    folder = root / f"{name}-texts"
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"doc-{i:03d}.txt").write_text(text, encoding="utf-8")
    out = root / name
    prepare(PrepareConfig(sources=(str(folder),), out=str(out), tokens_per_shard=TOKENS_PER_SHARD, **options))
    return out


def expected_positions(doc_lengths, total) -> np.ndarray:
    """Every token's position within its document, over the whole stream."""
    starts = np.zeros(total, dtype=bool)
    starts[np.cumsum([0, *doc_lengths[:-1]])] = True
    last_start = np.maximum.accumulate(np.where(starts, np.arange(total), 0))
    return np.arange(total) - last_start


def expected_cu_seqlens(doc_starts, window_starts, seq_len) -> list[int]:
    """Segment boundaries of the flattened batch from the document starts alone: each row's start, and every document
    start inside a row."""
    bounds = []
    for row, start in enumerate(window_starts):
        bounds += [row * seq_len] + [row * seq_len + int(d) - start for d in doc_starts if start < d < start + seq_len]
    return bounds + [len(window_starts) * seq_len]


def docs_from_files(path) -> np.ndarray:
    """Global document starts read back from the .docs.npy files beside the shards."""
    manifest = json.loads((path / "manifest.json").read_text())
    starts, offset = [], 0
    for shard in manifest["shards"]:
        starts.append(np.load(path / shard["docs_file"]) + offset)
        offset += shard["num_tokens"]
    return np.concatenate(starts)


@pytest.fixture(scope="module", params=["eos", "bos+eos"])
def dataset(request, tmp_path_factory):
    """(path, expected position of every token, document starts) of a prepared dataset of known documents."""
    bos = request.param == "bos+eos"
    specials = 2 if bos else 1
    texts = make_texts(specials)
    path = write_dataset(tmp_path_factory.mktemp("docs"), texts, "data", prepend_bos=bos)
    tokenizer = load_tokenizer().build()
    lengths = [len(tokenizer.encode(text, add_special_tokens=False).ids) + specials for text in texts]
    assert lengths[0] == TOKENS_PER_SHARD and max(lengths) > 20 * TOKENS_PER_SHARD
    total = sum(lengths)
    doc_starts = np.cumsum([0, *lengths[:-1]])
    # What sdl prepare writes: every document start once, a start on a shard boundary at offset 0 of the next shard.
    np.testing.assert_array_equal(docs_from_files(path), doc_starts)
    assert np.load(path / "shard-000001.docs.npy")[0] == 0
    return path, expected_positions(lengths, total), doc_starts


@pytest.mark.parametrize("seq_len,stride", [(8, 8), (8, 3), (16, 5), (1, 1), (64, 64), (100, 37), (300, 61)])
def test_position_ids_match_the_brute_force_for_every_window(dataset, seq_len, stride):
    path, expected, doc_starts = dataset
    ds = TokenWindows(path, seq_len=seq_len, stride=stride, doc_starts=True)
    plain = TokenWindows(path, seq_len=seq_len, stride=stride)
    order = list(range(len(ds)))
    random.Random(seq_len).shuffle(order)
    for chunk in range(0, len(order), 13):
        ids = order[chunk:chunk + 13]
        batch = ds.__getitems__(ids)
        assert batch["position_ids"].shape == (len(ids), seq_len) and batch["position_ids"].dtype == batch["input_ids"].dtype
        want = np.stack([expected[i * stride:i * stride + seq_len] for i in ids])
        np.testing.assert_array_equal(batch["position_ids"].numpy(), want)
        bounds = expected_cu_seqlens(doc_starts, [i * stride for i in ids], seq_len)
        assert batch["cu_seqlens"].dtype == torch.int32 and batch["cu_seqlens"].tolist() == bounds
        assert batch["max_seqlen"] == max(b - a for a, b in zip(bounds, bounds[1:]))
        reference = plain.__getitems__(ids)
        assert list(reference) == ["input_ids", "labels", "sample_ids"]
        for key in reference:
            assert torch.equal(batch[key], reference[key])
    # The grid reaches windows that begin many shards after their document started.
    window_starts = np.arange(len(ds)) * stride
    doc_of_window = doc_starts[np.searchsorted(doc_starts, window_starts, side="right") - 1]
    assert ((window_starts // TOKENS_PER_SHARD - doc_of_window // TOKENS_PER_SHARD) >= 10).any()


def test_sampler_batches_located_by_chunk_carry_the_same_positions(dataset):
    from sdl.loader.sampling.sampler import ElasticSampler

    path, _, _ = dataset
    ds = TokenWindows(path, seq_len=24, stride=11, doc_starts=True)
    for batch in ElasticSampler(len(ds), 6, seed=4, fingerprint=ds.identity, drop_last=False):
        got, alone = ds.__getitems__(batch), ds.__getitems__(list(batch))
        assert list(got) == list(alone)
        assert all(torch.equal(got[k], alone[k]) if isinstance(got[k], torch.Tensor) else got[k] == alone[k] for k in got)


def test_single_samples_grouped_layout_and_random_shift(dataset):
    path, expected, _ = dataset
    ds = TokenWindows(path, seq_len=16, stride=5, doc_starts=True)
    for i in (0, 1, len(ds) // 2, len(ds) - 1):
        sample = ds[i]
        assert list(sample) == ["input_ids", "labels", "position_ids", "sample_ids"]
        np.testing.assert_array_equal(sample["position_ids"].numpy(), expected[i * 5:i * 5 + 16])
    grouped = TokenWindows(path, seq_len=16, stride=5, shift=4, layout="grouped", doc_starts=True)
    batch = grouped.__getitems__([3, 40])
    assert batch["position_ids"].shape == batch["input_ids"].shape == (2, 4, 4)
    np.testing.assert_array_equal(batch["position_ids"].reshape(2, 16).numpy(), np.stack([expected[15:31], expected[200:216]]))
    shifted = TokenWindows(path, seq_len=16, stride=5, shift="random", doc_starts=True).__getitems__([7, 8])
    np.testing.assert_array_equal(shifted["position_ids"].numpy(), np.stack([expected[35:51], expected[40:56]]))


def test_host_dtype_pickling_and_identity(dataset):
    path, expected, _ = dataset
    ds = TokenWindows(path, seq_len=32, stride=32, doc_starts=True, max_open_shards=2)
    first = ds.__getitems__([0, 30, 60])
    assert first["position_ids"].dtype == torch.int64
    assert ds.identity == TokenWindows(path, seq_len=32, stride=32).identity  # a saved state fits either way
    assert ds.describe() == TokenWindows(path, seq_len=32, stride=32).describe()
    assert len(ds._doc_starts._open) <= 2  # the LRU of mapped .docs.npy files is bounded like the shards'
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.num_open_shards == 0 and len(copy._doc_starts._open) == 0
    assert torch.equal(copy.__getitems__([0, 30, 60])["position_ids"], first["position_ids"])
    narrow = ds.with_host_dtype(ds.wire_dtype).__getitems__([0, 30, 60])
    assert narrow["position_ids"].dtype == torch.int32 and torch.equal(narrow["position_ids"].long(), first["position_ids"])


def test_make_loader_with_workers_carries_int64_position_ids(dataset):
    path, expected, _ = dataset
    ds = TokenWindows(path, seq_len=24, stride=24, doc_starts=True)
    loader = make_loader(ds, batch_size=5, seed=3, num_workers=2, device="cpu", world_size=1, rank=0)
    seen = 0
    for batch in loader:
        assert batch["position_ids"].dtype == torch.int64 and batch["position_ids"].device.type == "cpu"
        want = np.stack([expected[i * 24:i * 24 + 24] for i in batch["sample_ids"].tolist()])
        np.testing.assert_array_equal(batch["position_ids"].numpy(), want)
        seen += 1
    assert seen == len(ds) // 5


def test_a_missing_docs_file_is_named(dataset, tmp_path):
    path, _, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    (copy / "shard-000003.docs.npy").unlink()
    TokenWindows(copy, seq_len=8)  # without doc_starts nothing needs it
    with pytest.raises(ConfigError, match=r"shard-000003\.docs\.npy is missing; re-run sdl prepare"):
        TokenWindows(copy, seq_len=8, doc_starts=True)


def test_a_docs_file_that_disagrees_with_the_manifest_is_refused(dataset, tmp_path):
    path, _, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    np.save(copy / "shard-000000.docs.npy", np.array([0, 5, 9], dtype=np.int64))
    build_index(copy)  # as it is now: the reader's own checks of the file, not the index's record of it, refuse it
    with pytest.raises(FormatError, match=r"shard-000000\.docs\.npy holds \(3,\) int64 document offsets, the manifest says 1"):
        TokenWindows(copy, seq_len=8, doc_starts=True)[0]


def test_a_docs_file_changed_since_the_index_was_built_is_named_and_validate_finds_it_misplaced(dataset, tmp_path):
    """Other ascending starts at the same size, a new mtime: the reader names it when it maps it (was: wrong position_ids),
    and `--validate` sees that they are not where the shard's documents begin (the manifest has no checksum of it)."""
    path, _, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    build_index(copy)
    docs = next(docs for docs in sorted(copy.glob("shard-*.docs.npy")) if len(np.load(docs)) >= 2)
    starts, mtime_ns, shard = np.load(docs), docs.stat().st_mtime_ns, docs.name.replace(".docs", "")
    np.save(docs, np.arange(len(starts), dtype=np.int64) * 3 + 1)
    os.utime(docs, ns=(mtime_ns + 10**9, mtime_ns + 10**9))
    with pytest.raises(FormatError, match=rf"^{docs} was modified at .*the file changed since the index was built \(rewritten\); "
                                          rf"run `sdl index {copy} --validate`, which checks it"):
        TokenWindows(copy, seq_len=8, doc_starts=True).__getitems__(list(range(len(TokenWindows(copy, seq_len=8)))))
    report = validate_dataset(copy)
    assert [(f.file, f.expected) for f in report.failures] == [(docs.name, f"each document start where a document of {shard} begins")]
    assert report.failures[0].found.startswith("a document starting at offset 1 ") and "sdl prepare --repair" in report.failures[0].fix
    np.save(docs, starts)
    assert validate_dataset(copy).ok


def test_a_dataset_without_docs_files_is_refused(token_dataset):
    path = token_dataset(num_tokens=2_000, tokens_per_shard=500)  # synthetic: the manifest names no docs files
    with pytest.raises(ConfigError, match=r"shard-000000\.docs\.npy is not named in the manifest; re-run sdl prepare"):
        TokenWindows(path, seq_len=8, doc_starts=True)


def test_joined_job_outputs(tmp_path):
    texts = make_texts(specials=1)
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"doc-{i:03d}.txt").write_text(text, encoding="utf-8")
    for job in range(2):
        prepare(PrepareConfig(sources=(str(folder),), out=str(tmp_path / "joined" / f"job-{job:05d}"),
                              tokens_per_shard=TOKENS_PER_SHARD, num_jobs=2, job_index=job))
    root = tmp_path / "joined"
    join_jobs(root)
    doc_starts = docs_from_files(root)
    assert len(doc_starts) == len(texts)
    ds = TokenWindows(root, seq_len=50, stride=7, doc_starts=True)
    total = int(ds.index.total)
    expected = expected_positions(np.diff([*doc_starts, total]).tolist(), total)
    batch = ds.__getitems__(list(range(len(ds))))
    np.testing.assert_array_equal(batch["position_ids"].numpy(), np.stack([expected[i * 7:i * 7 + 50] for i in range(len(ds))]))
    assert validate_dataset(root).ok  # each part's first document follows the EOS that ends the part before


def test_position_ids_from_an_object_store_equal_the_local_ones(dataset, s3_bucket, s3_upload, tmp_path):
    """doc_starts=True on s3:// (a real moto server): the .docs.npy objects are read by GET, the batches (every
    field) equal the local dataset's, in this process and in a pickled copy (what a DataLoader worker gets)."""
    import boto3
    from sdl.loader.errors import StorageError

    path = dataset[0]
    url = s3_upload(path, s3_bucket, "docs")
    remote = TokenWindows(url, seq_len=16, stride=5, doc_starts=True, cache_dir=tmp_path / "cache")
    here = TokenWindows(path, seq_len=16, stride=5, doc_starts=True)
    order = list(range(len(here)))
    random.Random(3).shuffle(order)
    for ds in (remote, pickle.loads(pickle.dumps(remote))):
        for chunk in range(0, len(order), 29):
            got, want = ds.__getitems__(order[chunk:chunk + 29]), here.__getitems__(order[chunk:chunk + 29])
            assert list(got) == list(want)
            for key in want:
                assert torch.equal(got[key], want[key]) if isinstance(want[key], torch.Tensor) else got[key] == want[key]
    boto3.client("s3").delete_object(Bucket=s3_bucket, Key="docs/shard-000003.docs.npy")
    fresh = TokenWindows(url, seq_len=16, stride=5, doc_starts=True, cache_dir=tmp_path / "cache")
    with pytest.raises(StorageError, match=f"{s3_bucket}/docs/shard-000003.docs.npy"):
        fresh.__getitems__([3 * TOKENS_PER_SHARD // 5 + 1])
