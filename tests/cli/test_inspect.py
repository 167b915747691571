"""`sdl inspect` end to end: counts, windows and split, decoded samples, --json, errors."""

import json

from sdl.cli.main import main
from sdl.loader.data.split import count_windows


def run(capsys, *args):
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_token_windows_json(token_dataset, capsys):
    path = token_dataset(num_tokens=10_000, tokens_per_shard=1_000, vocab_size=500)
    code, out, _ = run(capsys, "inspect", path, "--seq-len", 64, "--stride", 32, "--split-rate", 0.9, "--show", 2, "--json")
    info = json.loads(out)
    assert code == 0 and info["tokens"] == 10_000 and info["documents"] > 0 and info["dtype"] == "uint16"
    assert info["windows"] == count_windows(10_000, 64, 32) == (10_000 - 65) // 32 + 1
    assert info["train_windows"] == round(info["windows"] * 0.9)
    assert info["samples"][1]["ids"] == [(32 + i) % 500 for i in range(64)]
    assert "could not be loaded" in info["samples"][0]["note"]


def test_inspect_decodes_with_a_tokenizer_file(token_dataset, tmp_path, capsys):
    from tokenizers import Tokenizer, models

    vocab = {f"w{i}": i for i in range(500)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(tmp_path / "tok.json"))
    path = token_dataset(num_tokens=2_000, tokens_per_shard=1_000, vocab_size=500)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tokenizer"]["name"] = str(tmp_path / "tok.json")
    (path / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run(capsys, "inspect", path, "--seq-len", 4, "--show", 1)
    assert code == 0 and "[window 0] 'w0 w1 w2 w3'" in out


def test_inspect_zarr_and_arrow_samples(tmp_path, capsys):
    import datasets
    import zarr

    zarr.create_array(str(tmp_path / "z" / "a.zarr"), shape=(6, 2, 2), chunks=(3, 2, 2), dtype="int32")[:] = 1
    code, out, _ = run(capsys, "inspect", tmp_path / "z", "--show", 2, "--json")
    assert code == 0 and json.loads(out)["samples"][1]["data"] == "shape [2, 2] int32"
    code, _, err = run(capsys, "inspect", tmp_path / "z", "--seq-len", 16, "--split-rate", 0.5)
    assert code == 1 and "--seq-len, --split-rate do not apply to a zarr dataset" in err
    datasets.Dataset.from_dict({"text": ["a", "b"], "n": [1, 2]}).save_to_disk(str(tmp_path / "s"))
    code, out, _ = run(capsys, "inspect", tmp_path / "s", "--show", 2)
    assert code == 0 and '"text": "b", "n": 2' in out
    datasets.Dataset.from_dict({"n": [1, None], "m": [1, 2]}).save_to_disk(str(tmp_path / "nulls"))
    code, out, _ = run(capsys, "inspect", tmp_path / "nulls", "--json")
    assert code == 0 and json.loads(out)["null_columns"] == ["n"]  # a list in every ArrowRows batch


def test_inspect_stale_cache_is_an_error(token_dataset, capsys):
    path = token_dataset(num_tokens=2_000, tokens_per_shard=1_000)
    assert run(capsys, "index", path)[0] == 0
    (path / "shard-000001.npy").write_bytes((path / "shard-000001.npy").read_bytes() + b"\0")
    code, _, err = run(capsys, "inspect", path)
    assert code == 1 and "run `sdl index" in err and err.count("\n") == 1


def _prepare(tmp_path, capsys, *extra):
    (tmp_path / "c.jsonl").write_text('{"text": "def f(x):\\n    return x + 1"}\n{"text": "print(f(2))"}\n')
    assert main(["prepare", str(tmp_path / "c.jsonl"), str(tmp_path / "tok"), *extra]) == 0
    capsys.readouterr()
    return tmp_path / "tok"


def test_inspect_decodes_with_the_bundled_tokenizer(tmp_path, capsys):
    path = _prepare(tmp_path, capsys)
    code, out, _ = run(capsys, "inspect", path, "--seq-len", 8, "--show", 1, "--json")
    sample = json.loads(out)["samples"][0]
    assert code == 0 and "note" not in sample and sample["text"].startswith("def f(x):")


def test_inspect_decodes_a_name_from_the_local_hf_cache(tmp_path, capsys, monkeypatch):
    import shutil

    from sdl.prepare.tokenizer import BUNDLED_PATH

    snapshot = tmp_path / "hf" / "hub" / "models--someone--tok" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    shutil.copy(BUNDLED_PATH, snapshot / "tokenizer.json")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    path = _prepare(tmp_path, capsys, "--tokenizer", "someone/tok")
    code, out, _ = run(capsys, "inspect", path, "--seq-len", 8, "--show", 1, "--json")
    assert code == 0 and json.loads(out)["samples"][0]["text"].startswith("def f(x):")


def test_inspect_does_not_decode_with_a_different_tokenizer_of_the_same_name(tmp_path, capsys):
    path = _prepare(tmp_path, capsys)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tokenizer"]["hash"] = "sha256:" + "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run(capsys, "inspect", path, "--seq-len", 8, "--show", 1, "--json")
    assert code == 0 and "differs" in json.loads(out)["samples"][0]["note"]


def test_inspect_hf_config_picks_one_of_several_cached_configs(tmp_path, capsys):
    import datasets

    for name, rows in (("a", 3), ("b", 5)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name}{i}"}) + "\n" for i in range(rows)))
        datasets.load_dataset("json", data_files=str(tmp_path / f"{name}.jsonl"), cache_dir=str(tmp_path / "cache"))
    capsys.readouterr()
    code, _, err = run(capsys, "inspect", "--hf", "json", "--hf-cache", tmp_path / "cache")
    assert code == 1 and "--hf-config" in err
    configs = sorted(p.name for p in (tmp_path / "cache" / "json").iterdir() if p.is_dir())
    items = []
    for config in configs:
        code, out, _ = run(capsys, "inspect", "--hf", "json", "--hf-cache", tmp_path / "cache", "--hf-config", config, "--show", 1, "--json")
        assert code == 0
        items.append(json.loads(out)["items"])
    assert sorted(items) == [3, 5]


def test_inspect_split_rate_needs_windows(token_dataset, capsys):
    path = token_dataset(num_tokens=2_000, vocab_size=1000)
    code, _, err = run(capsys, "inspect", path, "--split-rate", 0.5)
    assert code == 1 and err.startswith("error: --split-rate 0.5 splits token windows") and err.count("\n") == 1
    code, out, _ = run(capsys, "inspect", path, "--split-rate", 0.5, "--seq-len", 16, "--json")
    assert code == 0 and json.loads(out)["train_windows"] > 0


def test_inspect_a_damaged_arrow_file_is_one_line_not_a_bus_error(tmp_path, capsys):
    """The report: 8 bytes of "X" over string offsets of a save_to_disk file sent the row copy past the memory map
    (SIGBUS). `sdl index` reads record batch headers only and accepts it; reading a row of it is one error line that
    names the file and `sdl index --validate`, which lists it."""
    import datasets

    datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(200)], "n": list(range(200))}).save_to_disk(
        str(tmp_path / "ar"), num_shards=2)
    target = tmp_path / "ar" / "data-00000-of-00002.arrow"
    with open(target, "r+b") as handle:
        handle.seek(600)
        handle.write(b"XXXXXXXX")
    assert run(capsys, "index", tmp_path / "ar")[0] == 0
    code, _, err = run(capsys, "inspect", tmp_path / "ar", "--show", 15)
    assert code == 1 and err.startswith(f"error: {target}: damaged Arrow record batch 0") and err.count("\n") == 1
    assert f"run `sdl index {tmp_path / 'ar'} --validate`" in err
    code, _, err = run(capsys, "index", tmp_path / "ar", "--validate")
    assert code == 1 and "data-00000-of-00002.arrow" in err and "data-00001" not in err
