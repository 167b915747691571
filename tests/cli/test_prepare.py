"""`sdl prepare` through the real CLI: --json, re-runs, refusal, every bad input's one-line error, and SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sdl.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "prepare"))
from corpus import dataset_bytes, make_texts, write_jsonl  # noqa: E402


def sdl(capsys, *args):
    code = main(["prepare", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_summary_rerun_and_refusal(tmp_path, capsys):
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(40))
    out = tmp_path / "out"
    code, stdout, _ = sdl(capsys, data, out, "--tokens-per-shard", 100, "--json")
    report = json.loads(stdout)
    assert code == 0 and report["status"] == "complete" and report["num_docs"] == 40
    assert report["num_shards"] == -(-report["num_tokens"] // 100)
    before = dataset_bytes(out)
    code, stdout, _ = sdl(capsys, data, out, "--tokens-per-shard", 100)
    assert code == 0 and "already complete" in stdout
    assert dataset_bytes(out) == before
    code, _, err = sdl(capsys, data, out, "--tokens-per-shard", 50)
    assert code == 1 and "different arguments" in err and "--overwrite" in err
    assert dataset_bytes(out) == before
    code, stdout, _ = sdl(capsys, data, out, "--tokens-per-shard", 50, "--overwrite", "--json")
    assert code == 0 and json.loads(stdout)["num_shards"] == -(-report["num_tokens"] // 50)


def test_config_file_and_flags_override(tmp_path, capsys):
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(20), field="body")
    config = tmp_path / "c.toml"
    config.write_text(f'sources = ["{data}"]\ntext_field = "body"\ntokens_per_shard = 1000\n')
    code, stdout, _ = sdl(capsys, "--config", config, tmp_path / "out", "--tokens-per-shard", 64, "--json")
    assert code == 0 and json.loads(stdout)["tokens_per_shard"] == 64


def test_demo_toml_matches_the_library_demo():
    import tomllib
    from sdl.prepare.demo import DEMO_OPTIONS

    file = tomllib.loads((Path(__file__).resolve().parents[2] / "configs" / "demo.toml").read_text())
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in file.items()} == DEMO_OPTIONS


def _big_vocab_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)} | {"[UNK]": 70_000, "</s>": 70_001}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return path


BAD_INPUTS = {
    "missing path": (lambda d: [d / "nope.jsonl"], [], "nope.jsonl: no such file or folder"),
    "empty input": (lambda d: [d / "empty.jsonl"], [], "the input is empty"),
    "only blank lines": (lambda d: [d / "blank.jsonl"], [], "no documents in the input"),
    "unsupported extension": (lambda d: [d / "table.csv"], [], "table.csv: unsupported file type '.csv'"),
    "malformed JSON": (lambda d: [d / "broken.jsonl"], [], "broken.jsonl:2: malformed JSON"),
    "missing field": (lambda d: [d / "nofield.jsonl"], [], "nofield.jsonl:1: no field 'text' (its fields: body)"),
    "non-string text": (lambda d: [d / "number.jsonl"], [], "number.jsonl:1: field 'text' is a number, expected a string"),
    "unknown tokenizer": (lambda d: [d / "good.jsonl"], ["--tokenizer", "no-such/tokenizer-xyz"], "`hf download no-such/tokenizer-xyz`"),
    "tokens per shard": (lambda d: [d / "good.jsonl"], ["--tokens-per-shard", "0"], "--tokens-per-shard is 0, expected a positive integer"),
    "huge tokens per shard": (lambda d: [d / "good.jsonl"], ["--tokens-per-shard", str(10**12)], "expected at most 1,073,741,824"),
    "lone surrogate": (lambda d: [d / "surrogate.jsonl"], [], "surrogate.jsonl:2: field 'text' holds a lone surrogate escape (\\ud83d"),
    "deeply nested JSON": (lambda d: [d / "deep.jsonl"], [], "deep.jsonl:2: JSON nested too deeply"),
    "uint16 too small": (lambda d: [d / "good.jsonl"], ["--dtype", "uint16", "--tokenizer", "{d}/big.json"], "--dtype uint16 holds ids below 65,536"),
    "config unknown key": (lambda d: [d / "good.jsonl"], ["--config", "{d}/bad.toml"], "bad.toml: unknown key tokens_per_shrd"),
    "config string for a boolean": (lambda d: [d / "good.jsonl"], ["--config", "{d}/eos.toml"],
                                    "eos.toml: append_eos is 'yes' (str), expected true or false"),
    "config number for a string": (lambda d: [d / "good.jsonl"], ["--config", "{d}/field.toml"],
                                   "field.toml: tokenizer is 5 (int), expected a string"),
    "config list for a string": (lambda d: [d / "good.jsonl"], ["--config", "{d}/list.toml"],
                                 "list.toml: text_field is ['a'] (list), expected a string"),
    "config float for an integer": (lambda d: [d / "good.jsonl"], ["--config", "{d}/float.toml"],
                                    "float.toml: tokens_per_shard is 100.5 (float), expected a whole number"),
    "config is a folder": (lambda d: [d / "good.jsonl"], ["--config", "{d}"], "is a folder, expected a .toml config file"),
}


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "table.csv").write_text("text\nhello\n")
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n')
    (tmp_path / "number.jsonl").write_text('{"text": 12}\n')
    (tmp_path / "good.jsonl").write_text('{"text": "fine"}\n')
    (tmp_path / "surrogate.jsonl").write_text('{"text": "fine"}\n{"text": "smile \\ud83d"}\n')
    (tmp_path / "deep.jsonl").write_text('{"text": "fine"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    (tmp_path / "bad.toml").write_text("tokens_per_shrd = 10\n")
    (tmp_path / "eos.toml").write_text('append_eos = "yes"\n')
    (tmp_path / "field.toml").write_text("tokenizer = 5\n")
    (tmp_path / "list.toml").write_text('text_field = ["a"]\n')
    (tmp_path / "float.toml").write_text("tokens_per_shard = 100.5\n")
    _big_vocab_tokenizer(tmp_path / "big.json")
    return tmp_path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_error(bad_inputs, capsys, case):
    sources, flags, wording = BAD_INPUTS[case]
    out = bad_inputs / "out"
    code, stdout, err = sdl(capsys, *sources(bad_inputs), out, *[f.format(d=bad_inputs) for f in flags])
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert wording in err
    assert not out.exists()


def test_a_config_string_never_reads_as_overwrite_true(tmp_path, capsys):
    """`overwrite = "no"` in a config file is refused: a truthy string must not replace a dataset that differs."""
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(20))
    out = tmp_path / "out"
    assert sdl(capsys, data, out, "--tokens-per-shard", 100)[0] == 0
    before = dataset_bytes(out)
    config = tmp_path / "c.toml"
    config.write_text('overwrite = "no"\ntokens_per_shard = 50\n')
    code, _, err = sdl(capsys, data, out, "--config", config)
    assert code == 1 and err.count("\n") == 1 and "overwrite is 'no' (str), expected true or false" in err
    assert dataset_bytes(out) == before


def test_options_that_would_be_ignored_are_refused(tmp_path, capsys):
    """--repair reruns the journal's options and --demo prepares the embedded default: other options or sources are
    refused with one line rather than silently dropped."""
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(5))
    for args, wording in (([tmp_path / "out", "--repair", "--overwrite"], "--repair reruns OUT with the options its journal recorded"),
                          ([tmp_path / "out", "--repair", "--tokens-per-shard", "50"], "(got --tokens-per-shard)"),
                          ([data, tmp_path / "out", "--demo"], "--demo prepares the embedded default")):
        code, _, err = sdl(capsys, *args)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and wording in err, err
        assert not (tmp_path / "out").exists()
    (tmp_path / "plain").mkdir()
    code, _, err = sdl(capsys, tmp_path / "plain", "--repair")
    assert code == 1 and "no journal of the run that wrote it" in err and not any((tmp_path / "plain").iterdir())


def test_unwritable_output_folder(tmp_path, capsys):
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(3))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = sdl(capsys, data, blocker / "out")
    assert code == 1 and err.startswith("error: ") and "cannot write the output folder" in err


@pytest.mark.slow
def test_sigkill_then_rerun_is_byte_identical(tmp_path):
    from sdl.prepare import PrepareConfig, prepare

    data = write_jsonl(tmp_path / "a.jsonl", make_texts(400, seed=9, max_words=60))
    args = ["--tokens-per-shard", "23", "--num-proc", "2", "--json"]
    prepare(PrepareConfig(sources=(str(data),), out=str(tmp_path / "whole"), tokens_per_shard=23))
    out = tmp_path / "killed"
    journal = out / ".sdl" / "prepare-journal.json"
    command = [sys.executable, "-m", "sdl.cli.main", "prepare", str(data), str(out), *args]
    for wanted_shards in (20, 150):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            try:
                if json.loads(journal.read_text())["num_shards"] >= wanted_shards:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)  # the CLI and its worker processes, mid-run
        child.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it was killed; make it slower"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["resumed"] is True
    assert dataset_bytes(out) == dataset_bytes(tmp_path / "whole")


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk with ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (2500, 2500))
from sdl.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_write_that_fails_is_one_line_and_the_rerun_resumes(tmp_path):
    from sdl.prepare import PrepareConfig, prepare

    data = write_jsonl(tmp_path / "a.jsonl", make_texts(200, seed=4, max_words=40))
    args = ["prepare", str(data), str(tmp_path / "out"), "--tokens-per-shard", "100", "--json"]
    failed = subprocess.run([sys.executable, "-c", FULL_DISK, *args], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert failed.stderr.startswith(f"error: {tmp_path / 'out'}: cannot write (File too large); every shard written so far is kept")
    journal = json.loads((tmp_path / "out" / ".sdl" / "prepare-journal.json").read_text())
    assert journal["num_shards"] > 3 and not (tmp_path / "out" / "manifest.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "sdl.cli.main", *args], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["resumed"] is True
    prepare(PrepareConfig(sources=(str(data),), out=str(tmp_path / "whole"), tokens_per_shard=100))
    assert dataset_bytes(tmp_path / "out") == dataset_bytes(tmp_path / "whole")


def test_help_shows_the_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["prepare", "--help"]) == 0
    text = capsys.readouterr().out
    for default in ("(default: 100000000)", "(default: auto)", "(default: text)", "(default: fail)", "(default: bundled 8k BPE)"):
        assert default in text, f"{default} missing from sdl prepare --help (Rich drops [default: …] as markup)"


@pytest.mark.parametrize("name", ["demo.toml", "fineweb-gpt2.toml"])
def test_shipped_configs_load(name):
    from sdl.prepare import load_config_file, make_config

    settings = load_config_file(Path(__file__).resolve().parents[2] / "configs" / name)
    config = make_config(settings, {"sources": ("x.jsonl",), "out": "out"})
    assert config.sources == ("x.jsonl",) and config.tokens_per_shard == settings["tokens_per_shard"]


def test_unknown_config_key_suggests_the_known_one(bad_inputs, capsys):
    code, _, err = sdl(capsys, bad_inputs / "good.jsonl", bad_inputs / "out", "--config", bad_inputs / "bad.toml")
    assert code == 1 and "tokens_per_shrd (did you mean tokens_per_shard?)" in err


def test_repair_leaves_an_index_that_opens(tmp_path, capsys):
    """The rewritten shard is newer than the cached index, which readers would refuse as stale: --repair rebuilds it."""
    import numpy as np
    from sdl.loader import TokenWindows

    data = write_jsonl(tmp_path / "a.jsonl", make_texts(120, seed=17, max_words=60))
    out = tmp_path / "out"
    assert sdl(capsys, data, out, "--tokens-per-shard", 500)[0] == 0
    expected = TokenWindows(out, seq_len=16)[3]["input_ids"]  # writes the index cache
    docs = next(docs for docs in sorted(out.glob("shard-*.docs.npy")) if len(np.load(docs)) >= 2)
    np.save(docs, np.load(docs) + 1)  # starts no longer where documents begin: --repair rewrites that shard
    code, stdout, _ = sdl(capsys, out, "--repair")
    assert code == 0 and (TokenWindows(out, seq_len=16, doc_starts=True)[3]["input_ids"] == expected).all()
    assert stdout.endswith("; index rebuilt\n"), stdout
