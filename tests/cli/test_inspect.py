"""`sdl inspect` end to end: counts, windows and split, decoded samples, --json, errors."""

import json

from sdl.cli.main import main
from sdl.loader.split import count_windows


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
    datasets.Dataset.from_dict({"text": ["a", "b"], "n": [1, 2]}).save_to_disk(str(tmp_path / "s"))
    code, out, _ = run(capsys, "inspect", tmp_path / "s", "--show", 2)
    assert code == 0 and '"text": "b", "n": 2' in out


def test_inspect_stale_cache_is_an_error(token_dataset, capsys):
    path = token_dataset(num_tokens=2_000, tokens_per_shard=1_000)
    assert run(capsys, "index", path)[0] == 0
    (path / "shard-000001.npy").write_bytes((path / "shard-000001.npy").read_bytes() + b"\0")
    code, _, err = run(capsys, "inspect", path)
    assert code == 1 and "run `sdl index" in err and err.count("\n") == 1
