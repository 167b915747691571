"""`sdl bench s3://…` on a real S3 server (moto): the report's accounting laws (not its timings)."""

import json

from sdl.cli.main import main


def test_bench_s3_reports_bytes_fetched_and_hits(s3_dataset, capsys):
    _, url = s3_dataset(num_tokens=20 * 4_096, tokens_per_shard=4_096, vocab_size=5_000)
    assert main(["bench", url, "--tokens", "5000", "--seq-len", "64"]) == 1  # the prefix holds a dataset: --tokens unused
    assert "--tokens sizes the synthetic dataset uploaded to a prefix that holds none" in capsys.readouterr().err
    assert main(["bench", url, "--seq-len", "64", "--cache-fraction", "0.01", "--json"]) == 1  # < one shard: refused
    err = capsys.readouterr().err
    assert err.startswith("error: --cache-fraction 0.01 gives the limited cache 1,664 bytes of the 166,400-byte dataset")
    assert err.rstrip().endswith("give --cache-fraction 0.89 or more (two shards' worth)") and len(err.splitlines()) == 1
    code = main(["bench", url, "--seq-len", "64", "--batch-size", "8", "--step-ms", "0", "--block-size", "64",
                 "--window-blocks", "2", "--cache-fraction", "0.5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    runs, size = report["runs"], report["dataset_bytes"]
    assert report["num_shards"] == 20 and size == 20 * (128 + 4_096 * 2)
    assert runs["cold_unlimited"]["bytes_fetched"] == size and runs["cold_unlimited"]["misses"] == 20  # each shard once
    assert runs["warm"]["bytes_fetched"] == 0 and runs["warm"]["hit_rate"] == 1.0
    assert runs["cold_limited"]["bytes_fetched"] >= size and report["fetched_vs_dataset"] == runs["cold_limited"]["bytes_fetched"] / size
    assert len({run["steps"] for run in runs.values()}) == 1  # the same epoch, four times
    assert {name: len(seconds) for name, seconds in report["epoch_seconds"].items()} == {"local": 3, "warm": 3}
    assert runs["warm"]["seconds"] == sorted(report["epoch_seconds"]["warm"])[1]  # the median of three
