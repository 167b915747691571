"""Joining the job folders of `sdl prepare --num-jobs J` into one dataset."""

import json

import numpy as np
import pytest
from sdl.loader.errors import FormatError, InputError
from sdl.loader.format.tokens import read_manifest
from sdl.loader.index import build_index, open_index
from sdl.loader.index.join import is_job_parent, join_jobs
from sdl.prepare.synthetic import write_synthetic_dataset


def write_jobs(root, num_jobs=3, present=None, vocab=1000, dtype=None):
    for k in present if present is not None else range(num_jobs):
        folder = root / f"job-{k:05d}"
        write_synthetic_dataset(folder, num_tokens=2_500 + 100 * k, tokens_per_shard=1_000, vocab_size=vocab, dtype=dtype, doc_len=50)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["job"] = {"num_jobs": num_jobs, "job_index": k}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_join_lists_parts_in_job_order(tmp_path):
    root = write_jobs(tmp_path / "out")
    assert is_job_parent(root)
    joined = join_jobs(root)
    assert [p["path"] for p in joined.parts] == ["job-00000", "job-00001", "job-00002"]
    assert joined.num_tokens == 2_500 + 2_600 + 2_700 and joined.shards[3].file == "job-00001/shard-000000.npy"
    assert read_manifest(root).parts == joined.parts
    index = build_index(root)
    source_ids, offsets = index.locate([2_500])
    first_of_job1 = np.load(index.path_of(int(source_ids[0])))[offsets[0]]
    assert index.sources.paths[int(source_ids[0])] == "job-00001/shard-000000.npy" and first_of_job1 == 0


def test_rejoining_unchanged_keeps_the_cache_valid(tmp_path):
    root = write_jobs(tmp_path / "out", num_jobs=2)
    join_jobs(root)
    index = build_index(root)
    join_jobs(root)
    assert open_index(root).fingerprint == index.fingerprint


def test_join_refuses_missing_jobs(tmp_path):
    root = write_jobs(tmp_path / "out", num_jobs=3, present=[0, 2])
    with pytest.raises(InputError, match=r"missing job\(s\) \[1\]"):
        join_jobs(root)
    assert not (root / "manifest.json").exists()


def test_join_refuses_different_tokenizer_or_dtype(tmp_path):
    root = write_jobs(tmp_path / "a", num_jobs=2, present=[0])
    write_jobs(root, num_jobs=2, present=[1], vocab=2000)
    with pytest.raises(FormatError, match="tokenizer"):
        join_jobs(root)
    root = write_jobs(tmp_path / "b", num_jobs=2, present=[0])
    write_jobs(root, num_jobs=2, present=[1], dtype="uint32")
    with pytest.raises(FormatError, match="dtype"):
        join_jobs(root)
    assert not (root / "manifest.json").exists()


def _set_tokenizer(folder, **fields):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tokenizer"].update(fields)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_join_takes_one_tokenizer_named_by_different_paths_but_not_another_hash(tmp_path):
    root = write_jobs(tmp_path / "out", num_jobs=2)
    _set_tokenizer(root / "job-00000", name="/node1/tok/tokenizer.json", hash="sha256:aa")
    _set_tokenizer(root / "job-00001", name="/scratch/tok/tokenizer.json", hash="sha256:aa")
    assert join_jobs(root).num_tokens == 2_500 + 2_600
    _set_tokenizer(root / "job-00001", hash="sha256:bb")
    with pytest.raises(FormatError, match="tokenizer"):
        join_jobs(root)
