"""`sdl bench` through the real CLI: --json on a tiny config, the table, --plot, and errors for bad input."""

import json

import pytest
from sdl.cli.main import main

TINY = ["--tokens", "30000", "--seq-len", "64", "--batch-size", "4", "--steps", "3", "--num-workers", "1",
        "--step-ms", "1", "--device", "cpu"]


def run(capsys, *args):
    rc = main(["bench", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_json_has_every_field_with_sane_values(capsys):
    rc, out, _ = run(capsys, *TINY, "--json")
    assert rc == 0
    report = json.loads(out)
    assert report["version"] == 1 and report["config"]["seq_len"] == 64 and report["dataset"]["synthetic"]
    for name, result in report["throughput"].items():
        assert all(result[key] > 0 for key in ("samples_per_s", "tokens_per_s", "mb_per_s", "latency_p50_ms", "latency_p99_ms")), name
    assert set(report["ratios"]) == {"sdl_vs_baseline_in_process", "sdl_vs_ceiling", "sdl_vs_held_ceiling", "sdl_vs_per_row_ceiling", "sdl_vs_baseline_workers",
                                     "sdl_workers_vs_in_process", "main_cpu_workers_vs_in_process"}
    assert all(report["ratios"][key] > 0 for key in ("sdl_vs_baseline_in_process", "sdl_vs_ceiling", "sdl_workers_vs_in_process"))
    assert report["physical"]["memcpy_gb_per_s"] > 0 and report["peers"] == {}
    assert len(report["resume"]) == 6 and all(r["first_batch_ms"] > 0 for r in report["resume"])
    assert report["resume_memory"]["num_samples"] == 10**9
    for name in ("sdl", "baseline"):
        stall = report["stall"][name]
        assert 0 <= stall["stall_fraction"] <= 1 and stall["steps"] == 3 and stall["gpu_utilisation"] is None
    assert report["cuda"] == {"h2d_gb_per_s": None, "copy_compute_overlap": None, "gpu_utilisation_sdl": None,
                              "gpu_utilisation_baseline": None, "matmuls_per_step": None}


def test_table_on_a_given_dataset(capsys, token_dataset):
    path = token_dataset(num_tokens=20_000, tokens_per_shard=8_000)
    rc, out, _ = run(capsys, path, "--seq-len", "32", "--batch-size", "2", "--steps", "2", "--num-workers", "0", "--step-ms", "0")
    assert rc == 0
    for heading in ("Throughput", "Ratios", "Resume", "Data stall", "ceiling", "baseline in process"):
        assert heading in out
    assert "sdl workers" not in out  # no workers asked for: no worker rows


def test_missing_dataset_is_a_one_line_error(capsys, tmp_path):
    rc, _, err = run(capsys, tmp_path / "nope", "--steps", "1")
    assert rc == 1 and err.startswith("error: ") and "no such dataset folder" in err


def test_cuda_without_cuda_is_a_one_line_error(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    rc, _, err = run(capsys, *TINY[:-2], "--device", "cuda")
    assert rc == 1 and "CUDA is not available" in err


def test_plot_draws_the_timeline(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "timeline.png"
    rc, out, _ = run(capsys, *TINY, "--plot", target)
    assert rc == 0 and target.read_bytes()[:4] == b"\x89PNG" and "timeline drawn" in out


def test_plot_without_matplotlib_says_how_to_install(capsys, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    rc, _, err = run(capsys, *TINY, "--plot", tmp_path / "t.png")
    assert rc == 1 and "pip install 'streaming-dataloader[plot]'" in err
