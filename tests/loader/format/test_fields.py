"""A manifest is read only when every field has its JSON type, every file it names lies inside the dataset, and its
totals are its shards' sums; anything else is a FormatError naming the manifest, the field, what was found and the fix."""

import json

import pytest
from sdl.loader.errors import FormatError
from sdl.loader.format.tokens import Manifest, parse_manifest, read_manifest


def shard0(field, value):
    return lambda m: m["shards"][0].update({field: value})


# name: (change to the manifest, the text naming the field and what was found)
BAD = {
    "tokenizer null": (lambda m: m.update(tokenizer=None), "tokenizer is null, expected an object"),
    "vocab_size a string": (lambda m: m["tokenizer"].update(vocab_size="big"), 'tokenizer.vocab_size is "big" (a string), expected an integer'),
    "eos_id a string": (lambda m: m["tokenizer"].update(eos_id="x"), 'tokenizer.eos_id is "x" (a string), expected an integer or null'),
    "file a number": (shard0("file", 5), "shards[0].file is 5 (an integer), expected a string"),
    "checksum a number": (shard0("checksum", 3), "shards[0].checksum is 3 (an integer), expected a string"),
    "docs_file a number": (shard0("docs_file", 3), "shards[0].docs_file is 3 (an integer), expected a string or null"),
    "num_tokens a float": (shard0("num_tokens", 1000.0), "shards[0].num_tokens is 1000.0 (a number), expected an integer"),
    "num_tokens true": (shard0("num_tokens", True), "shards[0].num_tokens is true (a boolean), expected an integer"),
    "total a string": (lambda m: m.update(num_tokens="many"), 'num_tokens is "many" (a string), expected an integer'),
    "parts a string": (lambda m: m.update(parts="x"), 'parts is "x" (a string), expected an array'),
    "append_eos a number": (lambda m: m.update(append_eos=1), "append_eos is 1 (an integer), expected a boolean"),
    "file absolute": (shard0("file", "/etc/passwd"), "shards[0].file is '/etc/passwd', expected a relative path inside the dataset"),
    "file escapes": (shard0("file", "../../corpus.jsonl"), "shards[0].file is '../../corpus.jsonl', expected a relative path inside"),
    "docs_file escapes": (shard0("docs_file", "job/../../x.docs.npy"), "shards[0].docs_file is 'job/../../x.docs.npy', expected a relative"),
    "shards emptied": (lambda m: m.update(shards=[]), "num_tokens is 3,000, expected 0 from the 0 shards listed"),
    "a shard dropped": (lambda m: m["shards"].pop(), "num_tokens is 3,000, expected 2,000 from the 2 shards listed"),
    "num_docs off": (lambda m: m.update(num_docs=m["num_docs"] + 1), "num_docs is"),
    "version a string": (lambda m: m.update(version="1"), 'version is "1" (a string), expected an integer'),
    "version true": (lambda m: m.update(version=True), "version is true (a boolean), expected an integer"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_field_is_refused_naming_it(token_dataset, name):
    path = token_dataset(num_tokens=3_000, tokens_per_shard=1_000)
    manifest = json.loads((path / "manifest.json").read_text())
    change, wording = BAD[name]
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path / 'manifest.json'}: ") and wording in message
    assert "\n" not in message and "sdl prepare" in message


def test_what_the_writer_writes_reads_back_the_same(token_dataset):
    path = token_dataset(num_tokens=3_500, tokens_per_shard=1_000)
    manifest = read_manifest(path)
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    joined = manifest.to_dict() | {"shards": [s | {"file": f"job-00000/{s['file']}"} for s in manifest.to_dict()["shards"]],
                                   "parts": [{"path": "job-00000", "num_shards": 4, "num_tokens": 3_500}]}
    assert parse_manifest(json.dumps(joined).encode(), "m.json").parts[0]["path"] == "job-00000"


def test_the_parts_must_add_up_to_the_shards(token_dataset):
    data = read_manifest(token_dataset(num_tokens=3_000, tokens_per_shard=1_000)).to_dict()
    data["parts"] = [{"path": "job-00000", "num_shards": 2, "num_tokens": 3_000}]
    with pytest.raises(FormatError, match=r"parts\[\]\.num_shards is 2, expected 3"):
        Manifest.from_dict(data, "m.json")
