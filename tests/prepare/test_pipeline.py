"""prepare(): round trip, exact counts and shard sizes, every input kind, --num-proc identity, jobs, max_docs, resume."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import dataset_bytes, make_texts, read_dataset, write_jsonl  # noqa: E402  (tests/prepare on sys.path via conftest)
from sdl.loader.errors import InputError
from sdl.prepare import PrepareConfig, load_tokenizer, prepare
from sdl.prepare.journal import read_journal


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer().build()


def run(tmp_path, sources, name="out", **options):
    config = PrepareConfig(sources=tuple(str(s) for s in sources), out=str(tmp_path / name), **options)
    return prepare(config), tmp_path / name


def check_round_trip(out, texts, tok, eos=0, bos=None):
    stream, docs, manifest = read_dataset(out)
    assert len(docs) == len(texts) == manifest["num_docs"]
    for doc, text in zip(docs, texts):
        assert doc[-1] == eos
        body = doc[1:-1] if bos is not None else doc[:-1]
        if bos is not None:
            assert doc[0] == bos
        assert tok.decode(body.tolist(), skip_special_tokens=False) == text
    return stream, manifest


def test_round_trip_counts_and_shard_sizes(tmp_path, tok):
    texts = make_texts(300)
    report, out = run(tmp_path, [write_jsonl(tmp_path / "a.jsonl", texts)], tokens_per_shard=997)
    stream, manifest = check_round_trip(out, texts, tok)
    expected = sum(len(tok.encode(t, add_special_tokens=False).ids) + 1 for t in texts)
    assert report.num_tokens == manifest["num_tokens"] == len(stream) == expected
    sizes = [s["num_tokens"] for s in manifest["shards"]]
    assert sizes[:-1] == [997] * (len(sizes) - 1) and 0 < sizes[-1] <= 997
    assert report.num_shards == len(sizes) == -(-expected // 997)
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 8192
    assert read_journal(out).complete


def test_every_input_kind_and_bos(tmp_path, tok):
    texts = make_texts(40, seed=1)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "1.jsonl", texts[:10])
    pq.write_table(pa.table({"text": texts[10:20]}), tmp_path / "in" / "2.parquet", row_group_size=3)
    with pa.ipc.new_stream(tmp_path / "in" / "3.arrow", pa.schema([("text", pa.string())])) as writer:
        writer.write_table(pa.table({"text": texts[20:30]}), max_chunksize=4)
    for i, text in enumerate(texts[30:]):
        (tmp_path / "in" / f"4-{i:02d}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "in" / "notes.md").write_text("ignored inside a folder")
    _, out = run(tmp_path, [tmp_path / "in"], tokens_per_shard=128, prepend_bos=True)
    check_round_trip(out, texts, tok, bos=1)


def test_dictionary_encoded_text_columns_read_as_their_strings(tmp_path, tok):
    texts = make_texts(30, seed=3)
    texts[7::5] = [texts[2]] * len(texts[7::5])  # repeated values, as dictionary encoding is for
    (tmp_path / "in").mkdir()
    column = pa.array(texts[:10]).dictionary_encode()
    pq.write_table(pa.table({"text": column}), tmp_path / "in" / "1.parquet", use_dictionary=True, store_schema=True)
    large = pa.table({"text": pa.array(texts[10:20], pa.large_string()).dictionary_encode()})
    with pa.ipc.new_file(tmp_path / "in" / "2.arrow", large.schema) as writer:  # an Arrow file
        writer.write_table(large)
    small = pa.table({"text": pa.array(texts[20:]).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.string()))})
    with pa.ipc.new_stream(tmp_path / "in" / "3.arrow", small.schema) as writer:  # an Arrow stream
        writer.write_table(small, max_chunksize=4)
    assert pa.types.is_dictionary(pq.ParquetFile(tmp_path / "in" / "1.parquet").schema_arrow.field("text").type)
    _, out = run(tmp_path, [tmp_path / "in"], tokens_per_shard=128)
    check_round_trip(out, texts, tok)


def test_save_to_disk_folder(tmp_path, tok):
    datasets = pytest.importorskip("datasets")
    texts = make_texts(25, seed=2)
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "saved"))
    _, out = run(tmp_path, [tmp_path / "saved"], tokens_per_shard=100)
    check_round_trip(out, texts, tok)


@pytest.mark.slow
def test_num_proc_output_is_byte_identical(tmp_path):
    paths = [write_jsonl(tmp_path / f"part-{i}.jsonl", make_texts(150, seed=i)) for i in range(3)]
    _, one = run(tmp_path, paths, "one", tokens_per_shard=333, batch_bytes=2000)
    _, two = run(tmp_path, paths, "two", tokens_per_shard=333, batch_bytes=700, num_proc=2)
    assert dataset_bytes(one) == dataset_bytes(two)


def test_jobs_split_the_documents_exactly_once(tmp_path, tok):
    texts = make_texts(60, seed=3)
    single = write_jsonl(tmp_path / "one.jsonl", texts)
    seen = []
    for k in range(3):
        _, out = run(tmp_path, [single], f"job{k}", tokens_per_shard=64, num_jobs=3, job_index=k)
        _, docs, manifest = read_dataset(out)
        assert manifest["job"] == {"num_jobs": 3, "job_index": k}
        seen += [tok.decode(d[:-1].tolist()) for d in docs]
    assert sorted(seen) == sorted(texts)
    files = [write_jsonl(tmp_path / f"f{i}.jsonl", texts[i * 10:(i + 1) * 10]) for i in range(6)]
    parts = [read_dataset(run(tmp_path, files, f"fjob{k}", tokens_per_shard=64, num_jobs=4, job_index=k)[1])[2]["sources"] for k in range(4)]
    assert [len(p) for p in parts] == [1, 2, 1, 2]
    assert [s["path"] for s in sum(parts, [])] == [str(f) for f in files]


def test_max_docs_and_skip(tmp_path, tok):
    texts = make_texts(30, seed=4)
    path = write_jsonl(tmp_path / "a.jsonl", texts)
    with open(path, "a") as handle:
        handle.write("{broken\n\n" + json.dumps({"text": "tail"}) + "\n")
    report, out = run(tmp_path, [path], tokens_per_shard=50, on_error="skip")
    assert report.num_skipped == 1 and report.num_docs == 31
    check_round_trip(out, texts + ["tail"], tok)
    report, out = run(tmp_path, [path], "capped", tokens_per_shard=50, max_docs=7)
    assert report.num_docs == 7
    check_round_trip(out, texts[:7], tok)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_is_byte_identical(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(200, seed=5, max_words=120))
    options = dict(tokens_per_shard=71, batch_bytes=1500, on_error="skip")
    _, whole = run(tmp_path, [path], "whole", **options)
    for stop_after in (3, 9, 10, 25):
        def stop(progress, stop_after=stop_after):
            if progress.num_shards >= stop_after:
                raise Interrupt
        config = PrepareConfig(sources=(str(path),), out=str(tmp_path / "resumed"), **options)
        with pytest.raises(Interrupt):
            prepare(config, progress=stop)
    report = prepare(config)
    assert report.resumed and report.status == "complete"
    assert dataset_bytes(tmp_path / "resumed") == dataset_bytes(whole)
    again = prepare(config)
    assert again.status == "already complete" and again.num_tokens == report.num_tokens


def test_bad_record_leaves_no_output(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", make_texts(50))
    with open(path, "a") as handle:
        handle.write('{"text": 3}\n')
    with pytest.raises(InputError, match=r"a\.jsonl:51: field 'text' is a number"):
        run(tmp_path, [path], tokens_per_shard=10)
    assert not (tmp_path / "out").exists()


def test_lone_surrogates_and_deep_nesting_are_skipped_as_malformed(tmp_path, tok):
    texts = make_texts(20, seed=6)
    path = write_jsonl(tmp_path / "a.jsonl", texts)
    with open(path, "a") as handle:
        handle.write('{"text": "half an emoji \\ud83d"}\n' + "[" * 100_000 + "]" * 100_000 + "\n" + json.dumps({"text": "tail"}) + "\n")
    report, out = run(tmp_path, [path], tokens_per_shard=50, on_error="skip")
    assert report.num_skipped == 2 and report.num_docs == 21
    check_round_trip(out, texts + ["tail"], tok)


@pytest.mark.parametrize("out", ["out", "ABSOLUTE"])
def test_a_write_the_output_refuses_keeps_every_shard_however_out_is_spelled(tmp_path, monkeypatch, out):
    """A shard's final name taken by a folder: its rename fails, naming the temporary file by an absolute path even
    for a relative OUT. That is the output's failure, never an input's: the shards written are kept, and the same
    command resumes, once the cause is gone, to the bytes of an uninterrupted run."""
    from dataclasses import replace
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out") if out == "ABSOLUTE" else out
    write_jsonl(tmp_path / "a.jsonl", make_texts(150, seed=8, max_words=60))
    config = PrepareConfig(sources=("a.jsonl",), out=out, tokens_per_shard=151, batch_bytes=1200)
    seen = []

    def block(progress):
        if not seen:
            seen.append(progress.num_shards)
            (Path(out) / f"shard-{seen[0] + 2:06d}.npy").mkdir()
    with pytest.raises(InputError, match=rf"^{out}: cannot write \(Is a directory\); every shard written so far is kept"):
        prepare(config, progress=block)
    kept = read_journal(Path(out)).num_shards
    assert seen[0] <= kept <= seen[0] + 2 and all((Path(out) / f"shard-{i:06d}.npy").is_file() for i in range(kept))
    (Path(out) / f"shard-{seen[0] + 2:06d}.npy").rmdir()
    assert prepare(config).resumed
    prepare(replace(config, out=str(tmp_path / "whole")))
    assert dataset_bytes(Path(out)) == dataset_bytes(tmp_path / "whole")


def test_a_hard_linked_input_adds_no_tokens(tmp_path, tok):
    texts = make_texts(40)
    path = write_jsonl(tmp_path / "a.jsonl", texts)
    (tmp_path / "copies").mkdir()
    os.link(path, tmp_path / "copies" / "b.jsonl")
    report, out = run(tmp_path, [path, tmp_path / "copies"], tokens_per_shard=500)
    check_round_trip(out, texts, tok)  # every document once
    assert [s["path"] for s in json.loads((out / "manifest.json").read_text())["sources"]] == [str(path)]
