"""`sdl index`, `sdl index --validate` and `sdl inspect` on a damaged manifest or docs file: exit 1, one line naming
the manifest field (or the file), nothing written, no traceback."""

import json

import numpy as np
import pytest
from sdl.cli.main import main
from sdl.loader.index import cache_path

COMMANDS = {"index": ["index"], "validate": ["index", "--validate"], "inspect": ["inspect", "--seq-len", 64, "--show", 1]}

# name: (change to the manifest, the field the error names)
BAD = {
    "tokenizer null": (lambda m: m.update(tokenizer=None), "tokenizer is null"),
    "vocab_size a string": (lambda m: m["tokenizer"].update(vocab_size="big"), "tokenizer.vocab_size is \"big\""),
    "eos_id a string": (lambda m: m["tokenizer"].update(eos_id="x"), "tokenizer.eos_id is \"x\""),
    "file a number": (lambda m: m["shards"][1].update(file=5), "shards[1].file is 5"),
    "checksum a number": (lambda m: m["shards"][1].update(checksum=3), "shards[1].checksum is 3"),
    "docs_file a number": (lambda m: m["shards"][1].update(docs_file=3), "shards[1].docs_file is 3"),
    "num_tokens a float": (lambda m: m["shards"][1].update(num_tokens=1000.0), "shards[1].num_tokens is 1000.0"),
    "num_tokens true": (lambda m: m["shards"][1].update(num_tokens=True), "shards[1].num_tokens is true"),
    "total a string": (lambda m: m.update(num_tokens="many"), "num_tokens is \"many\""),
    "parts a string": (lambda m: m.update(parts="x"), "parts is \"x\""),
    "file absolute": (lambda m: m["shards"][1].update(file="/etc/passwd"), "shards[1].file is '/etc/passwd', expected a relative path"),
    "file escapes": (lambda m: m["shards"][1].update(file="../../corpus.jsonl"), "shards[1].file is '../../corpus.jsonl'"),
    "shards emptied": (lambda m: m.update(shards=[]), "num_tokens is 3,000, expected 0 from the 0 shards listed"),
}


def run(capsys, *args):
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_manifest_field_is_one_line_naming_it(token_dataset, capsys, command, name):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    change, field = BAD[name]
    edit_manifest(path, change)
    code, out, err = run(capsys, *COMMANDS[command][:1], path, *COMMANDS[command][1:])
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path / 'manifest.json'}: {field}") and "sdl prepare" in err
    assert "/etc" not in err.split("; ", 1)[1] and not cache_path(path).exists()


def with_docs_files(path):
    """Write each shard's `.docs.npy` (a document every 97 tokens, as the synthetic dataset counts them) and list it."""
    manifest, offset = json.loads((path / "manifest.json").read_text()), 0
    for shard_id, shard in enumerate(manifest["shards"]):
        starts = np.arange(-offset % 97, shard["num_tokens"], 97, dtype=np.int64)
        assert len(starts) == shard["num_docs"]
        shard["docs_file"] = f"shard-{shard_id:06d}.docs.npy"
        np.save(path / shard["docs_file"], starts)
        offset += shard["num_tokens"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("damage, found", [
    (lambda p: p.unlink(), "found no such file"),
    (lambda p: p.write_bytes(p.read_bytes()[:10]), "found an unreadable file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-8]), "found an unreadable file"),
])
def test_inspect_names_a_damaged_docs_file_in_one_line(token_dataset, capsys, damage, found):
    path = with_docs_files(token_dataset(num_tokens=3_000, tokens_per_shard=1_000))
    code, out, _ = run(capsys, "inspect", path, "--json")
    assert code == 0 and json.loads(out)["documents"] == len(range(0, 3_000, 97)) and json.loads(out)["max_doc_len"] == 97
    damage(path / "shard-000001.docs.npy")
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path / 'shard-000001.docs.npy'}: expected 10 document offsets") and found in err
    assert f"sdl prepare --repair {path}" in err


@pytest.mark.parametrize("garbage", [b"x" * 50, b"{'descr': '<u2', 'fortran_order': False, 'shape': (1000,), 'x': [", b"\xff\xfe" * 20])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_shard_with_a_damaged_header_is_one_line_naming_it(token_dataset, capsys, command, garbage):
    # numpy parses the header as a Python literal: damage raised tokenize.TokenError or SyntaxError, a traceback
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    shard = path / "shard-000001.npy"
    raw = bytearray(shard.read_bytes())
    raw[10:10 + len(garbage)] = garbage
    shard.write_bytes(bytes(raw))
    code, out, err = run(capsys, *COMMANDS[command], path)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") and "shard-000001.npy" in err and "header" in err


@pytest.mark.parametrize("value", [10**9, -5])
def test_damaged_document_offsets_are_refused_not_read_as_stats_or_positions(token_dataset, capsys, value):
    # one offset overwritten inside the file: its shape and dtype still fit the manifest
    from sdl.loader import FormatError, TokenWindows

    path = with_docs_files(token_dataset(num_tokens=3_000, tokens_per_shard=1_000))
    docs = path / "shard-000001.docs.npy"
    starts = np.load(docs)
    starts[3] = value
    np.save(docs, starts)
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("error: shard-000001.docs.npy: expected ascending document starts inside its shard")
    with pytest.raises(FormatError, match=r"shard-000001\.docs\.npy: expected ascending document starts inside the shard's 1,000"):
        TokenWindows(path, seq_len=64, doc_starts=True).__getitems__(list(range(40)))
