"""`sdl bench`, `sdl bench-index` and `sdl bench-prepare`: bad or inapplicable options are one line and exit 1 before any work."""

from pathlib import Path

import pytest
from sdl.cli.main import main
from sdl.loader.errors import ConfigError


def run(capsys, *args):
    rc = main(list(map(str, args)))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_bench_index_dir_must_be_an_existing_folder(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    rc, out, err = run(capsys, "bench-index", "--num-shards", 10, "--dir", tmp_path / "afile", "--repeats", 1, "--positions", 10)
    assert rc == 1 and out == ""
    assert err == f"error: --dir {tmp_path / 'afile'} is a file; expected an existing folder to hold the temporary dataset " \
                  "(create it, or leave --dir out for the system's temp folder)\n"
    rc, _, err = run(capsys, "bench-index", "--num-shards", 10, "--dir", tmp_path / "nope", "--repeats", 1, "--positions", 10)
    assert rc == 1 and err.startswith(f"error: --dir {tmp_path / 'nope'} does not exist;") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("flag", ["--num-shards", "--tokens-per-shard", "--positions", "--repeats"])
def test_bench_index_counts_must_be_positive(capsys, flag):
    rc, out, err = run(capsys, "bench-index", flag, 0)
    assert rc == 1 and out == "" and err == f"error: {flag} is 0, expected a positive integer\n"


def test_bench_index_in_a_given_folder_leaves_it_as_it_was(capsys, tmp_path):
    rc, out, err = run(capsys, "bench-index", "--num-shards", 3, "--dir", tmp_path, "--repeats", 1, "--positions", 10, "--json")
    assert rc == 0, err
    assert '"num_shards": 3' in out and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, value, expected", [
    ("--max-proc", 0, "--max-proc is 0, expected a positive integer (the bench measures --num-proc 1 and this)"),
    ("--corpus-mb", 0, "--corpus-mb is 0.0, expected a positive number of MB (e.g. 0.1 for a quick run)"),
    ("--corpus-mb", -1, "--corpus-mb is -1.0, expected a positive number of MB (e.g. 0.1 for a quick run)"),
    ("--rss-mb", 0, "--rss-mb is 0.0, expected a positive number of MB (e.g. 0.1 for a quick run)"),
    ("--rss-mb", "nan", "--rss-mb is nan, expected a positive number of MB (e.g. 0.1 for a quick run)"),
])
def test_bench_prepare_options_are_checked_before_the_corpus_is_written(capsys, flag, value, expected):
    rc, out, err = run(capsys, "bench-prepare", flag, value)
    assert rc == 1 and out == "" and err == f"error: {expected}\n"


def test_bench_prepare_library_refuses_the_same_values():
    from sdl.prepare.bench import run_bench

    with pytest.raises(ConfigError, match=r"^corpus_mb is 0, expected a positive number of MB"):
        run_bench(corpus_mb=0)
    with pytest.raises(ConfigError, match=r"^num_procs is \(0, 1\), expected process counts >= 1"):
        run_bench(corpus_mb=0.1, num_procs=(0, 1))


@pytest.mark.parametrize("args, expected", [
    (["--arrow", "{d}"], "--arrow measures Arrow folders it writes itself; it takes no DATASET"),
    (["--cache-fraction", "2"], "--cache-fraction only applies to an s3:// DATASET"),
    (["{d}", "--block-size", "0", "--prefetch-steps", "3"], "--block-size, --prefetch-steps only apply to an s3:// DATASET"),
    (["--arrow", "--peer", "hf", "--tokens", "1000"], "--tokens, --peer do not apply to --arrow"),
    (["s3://bucket/bench", "--steps", "50", "--num-workers", "7", "--plot", "x.png"],
     "--num-workers, --steps, --plot do not apply to the object-store bench"),
    (["{m}", "--seq-len", "999", "--peer", "hf", "--step-ms", "3"], "--step-ms, --peer do not apply to a mixture bench of a config"),
    (["{m}", "--seq-len", "999"], "--seq-len 999 differs from {m}'s seq_len = 2048, which cuts the mixture's token windows; drop "
                                  "--seq-len (or give 2048), or change seq_len in the config"),
    (["{m}", "--seq-len", "2048", "--stride", "1024"], "--stride 1024 differs from {m}'s stride = 2048"),  # stride: seq_len
    (["--mixture", "--device", "cpu"], "--device does not apply to a mixture bench;"),
    (["{d}", "--tokens", "5"], "--tokens does not apply with a DATASET (it sizes the synthetic one)"),
])
def test_bench_refuses_options_it_would_ignore(capsys, tmp_path, args, expected):
    mix = Path(__file__).resolve().parents[2] / "configs" / "mix-web-code.toml"
    code = main(["bench", *[arg.format(d=tmp_path, m=mix) for arg in args]])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and expected.format(m=mix) in err, err


@pytest.mark.parametrize("flag, value, expected", [("--steps", 0, "steps (sdl bench --steps) is 0, expected a positive integer"),
                                                  ("--num-workers", -1, "num_workers (sdl bench --num-workers) is -1, expected >= 0")])
def test_bench_values_name_their_option(capsys, flag, value, expected):
    rc, out, err = run(capsys, "bench", flag, value)
    assert rc == 1 and out == "" and err == f"error: {expected}\n"
