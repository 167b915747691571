"""`sdl inspect` and `sdl bench` of a mixture config (configs/mix-*.toml): passes per source, the bench's figures, errors."""

import json
from pathlib import Path

import pytest

from sdl.cli.main import main
from sdl.loader.bench.mixture import ROUNDS
from sdl.loader.data.mixture_config import read_mixture_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run(capsys, *args):
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path, token_dataset, body=None):
    token_dataset(num_tokens=6_000, vocab_size=1000, name="web")
    token_dataset(num_tokens=2_000, vocab_size=1000, name="code")
    config = tmp_path / "mix-test.toml"
    config.write_text(body or 'seq_len = 16\n[sources.web]\npath = "tokens/web"\nweight = 3\n'
                              '[sources.code]\npath = "tokens/code"\nweight = 1\n')
    (tmp_path / "tokens").mkdir(exist_ok=True)
    for name in ("web", "code"):
        if not (tmp_path / "tokens" / name).exists():
            (tmp_path / name).rename(tmp_path / "tokens" / name)
    return config


def test_inspect_reports_weights_and_passes_per_source(tmp_path, token_dataset, capsys):
    config = write_config(tmp_path, token_dataset)
    code, out, _ = run(capsys, "inspect", config, "--json")
    info = json.loads(out)
    web, code_source = info["sources"]["web"], info["sources"]["code"]
    assert code == 0 and info["kind"] == "mixture" and info["seq_len"] == 16 and info["window_bound"] <= 2
    assert (web["weight"], code_source["weight"]) == (0.75, 0.25) and web["samples"] == (6_000 - 17) // 16 + 1
    assert web["draws_per_epoch"] + code_source["draws_per_epoch"] == info["num_samples"]
    assert max(web["passes_per_epoch"], code_source["passes_per_epoch"]) == 1.0  # one pass of the first source to run out
    code, out, _ = run(capsys, "inspect", config)
    assert code == 0 and "passes" in out and "web" in out


def test_bad_configs_are_one_line_errors(tmp_path, token_dataset, capsys):
    config = write_config(tmp_path, token_dataset, 'seq_len = 16\n[sources.web]\npath = "tokens/web"\n')
    code, _, err = run(capsys, "inspect", config)
    assert code == 1 and err.startswith("error: mixture source 'web' needs path") and len(err.strip().splitlines()) == 1
    config.write_text('seq_len = 16\nweights = 1\n[sources.web]\npath = "tokens/web"\nweight = 1\n')
    code, _, err = run(capsys, "inspect", config)
    assert code == 1 and "unknown keys ['weights']" in err


def test_bench_of_a_mixture_config(tmp_path, token_dataset, capsys):
    config = write_config(tmp_path, token_dataset)
    code, out, _ = run(capsys, "bench", config, "--json", "--steps", 3, "--num-workers", 0, "--batch-size", 4)
    report = json.loads(out)
    assert code == 0 and set(report["ratios"]) == {"in_process"} and report["ratios"]["in_process"] > 0
    assert len(report["samples_per_s"]["mixture_in_process"]) == ROUNDS and report["resume_positions"] == 10**9
    assert report["resume"]["new_weights_tracemalloc_mb"] < 50 and report["sources"]["web"]["weight"] == 0.75
    # the config's samples, not sdl bench's defaults for a synthetic dataset (which the config makes moot)
    assert {name: (s["kind"], s["seq_len"], s["stride"]) for name, s in report["sources"].items()} == \
        {"web": ("tokens", 16, 16), "code": ("tokens", 16, 16)}
    assert report["sources"]["code"]["path"].endswith("code") and "seq_len" not in report["config"]
    assert report["config"] == {"batch_size": 4, "num_workers": 0, "steps": 3, "warmup_steps": 5, "seed": 0}


def test_the_shipped_mixture_config_reads():
    config = read_mixture_config(CONFIGS / "mix-web-code.toml")
    assert [(s.name, s.weight, s.kind) for s in config.sources] == [("web", 0.75, "tokens"), ("code", 0.25, "tokens")]
    assert config.seq_len == 2048 and config.num_samples is None and Path(config.sources[0].path).is_absolute()


def test_inspect_reports_the_schedule_per_piece_and_refuses_a_bad_one_in_one_line(tmp_path, token_dataset, capsys):
    schedule = '[[schedule]]\nposition = 100\nweights = { web = 1, code = 3 }\n'
    body = 'seq_len = 16\n[sources.web]\npath = "tokens/web"\nweight = 3\n[sources.code]\npath = "tokens/code"\nweight = 1\n'
    config = write_config(tmp_path, token_dataset, body + schedule)
    code, out, _ = run(capsys, "inspect", config, "--json")
    info = json.loads(out)
    first, last = info["schedule"]
    assert code == 0 and (first["from"], first["to"], last["from"]) == (0, 100, 100) and last["weights"] == {"web": 0.25, "code": 0.75}
    assert sum(row["draws"] for row in first["sources"].values()) == 100 and first["sources"]["code"]["draws"] == 25
    assert last["to"] == info["num_samples"] and info["sources"]["code"]["passes_per_epoch"] == 1.0  # code runs out first
    code, out, _ = run(capsys, "inspect", config)
    assert code == 0 and "weight schedule" in out
    config.write_text(body + schedule.replace("code = 3", "cod = 3"))
    code, _, err = run(capsys, "inspect", config)
    assert code == 1 and err.startswith("error: mixture schedule weights at position 100 name ['cod', 'web']")
    assert len(err.strip().splitlines()) == 1


def test_bench_of_a_config_takes_its_own_seq_len_and_stride_and_refuses_others(tmp_path, token_dataset, capsys):
    config = write_config(tmp_path, token_dataset)  # seq_len = 16, no stride: 16
    code, out, err = run(capsys, "bench", config, "--seq-len", 16, "--stride", 16, "--json", "--steps", 2, "--num-workers", 0,
                         "--batch-size", 4)
    assert code == 0 and {s["seq_len"] for s in json.loads(out)["sources"].values()} == {16}, err
    code, out, err = run(capsys, "bench", config, "--seq-len", 32)
    assert code == 1 and not out and err == (f"error: --seq-len 32 differs from {config}'s seq_len = 16, which cuts the mixture's "
                                             "token windows; drop --seq-len (or give 16), or change seq_len in the config\n")
    (tmp_path / "samples.toml").write_text('seq_len = 16\n[sources.runs]\npath = "runs"\nweight = 1\nkind = "zarr"\n')
    code, out, err = run(capsys, "bench", tmp_path / "samples.toml", "--seq-len", 16)
    assert code == 1 and err == (f"error: --seq-len does not apply to {tmp_path / 'samples.toml'}: its sources are zarr or Arrow "
                                 "samples, not token windows; drop it\n")


def test_inspect_of_a_config_takes_its_own_seq_len_and_stride_and_refuses_others(tmp_path, token_dataset, capsys):
    config = write_config(tmp_path, token_dataset)  # seq_len = 16, no stride: 16
    assert run(capsys, "inspect", config, "--seq-len", 16, "--stride", 16, "--json")[:2] == run(capsys, "inspect", config, "--json")[:2]
    code, out, err = run(capsys, "inspect", config, "--stride", 8)
    assert code == 1 and not out and err == (f"error: --stride 8 differs from {config}'s stride = 16, which cuts the mixture's "
                                             "token windows; drop --stride (or give 16), or change stride in the config\n")


@pytest.mark.slow
def test_a_mixture_bench_times_5000_steps_a_round_unless_steps_is_given(tmp_path, token_dataset, capsys):
    """Its two readers are a few percent apart: 200-step rounds cannot tell them apart, so the default is 5,000."""
    config = write_config(tmp_path, token_dataset)
    for extra, steps in (((), 5000), (("--steps", 7), 7)):
        code, out, err = run(capsys, "bench", config, "--json", "--num-workers", 0, "--batch-size", 4, *extra)
        report = json.loads(out)
        assert code == 0 and report["config"]["steps"] == steps and len(report["samples_per_s"]["mixture_in_process"]) == ROUNDS, err
