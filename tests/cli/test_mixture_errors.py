"""`sdl inspect` / `sdl bench` of a mixture config with wrong types, or a folder for --mixture: one line, exit 1."""

import pytest
from sdl.cli.main import main


def run(capsys, *args):
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("body, expected", [
    ('seq_len = "long"\n[sources.a]\npath = "ds"\nweight = 1\n',
     "error: mixture config has seq_len = 'long'; expected an integer > 0: tokens per window, e.g. seq_len = 2048\n"),
    ('seq_len = 16\n[sources.a]\npath = "ds"\nweight = "half"\n',
     ("error: mixture source 'a' has weight = 'half'; expected a finite number >= 0, e.g. weight = 0.25 "
      "(weights are relative: 3 and 1 give 75% and 25%)\n")),
    ('seq_len = 16\nnum_samples = 9223372036854775808\n[sources.a]\npath = "ds"\nweight = 1\n',  # was an OverflowError
     ("error: mixture config has num_samples = 9,223,372,036,854,775,808; expected an integer below 2**62 "
      "(4,611,686,018,427,387,904: a loader state holds counts below it): give fewer positions per epoch, or no num_samples "
      "for one pass of the source that runs out first\n")),
    ('seq_len = 16\n[sources.a]\npath = "ds"\nweight = 1\nsplit = "val"\n',  # was ignored: the whole dataset was read
     ("error: mixture source 'a' (tokens) has split = 'val', which only Arrow sources take (a named split of the dataset); "
      "drop it, or give a folder holding only the samples wanted\n")),
])
@pytest.mark.parametrize("command", [["inspect"], ["bench", "--steps", "2"]])
def test_a_wrong_type_is_one_line(tmp_path, token_dataset, capsys, body, expected, command):
    token_dataset(num_tokens=2_000, vocab_size=1000, name="ds")
    (tmp_path / "mix.toml").write_text(body)
    code, out, err = run(capsys, command[0], tmp_path / "mix.toml", *command[1:])
    assert code == 1 and out == "" and err == expected


@pytest.mark.parametrize("position", [2**62, 2**63 - 1, 2**63])  # were OverflowError tracebacks
@pytest.mark.parametrize("command", [["inspect"], ["bench", "--steps", "2"]])
def test_a_schedule_position_beyond_what_a_state_holds_is_one_line(tmp_path, token_dataset, capsys, position, command):
    token_dataset(num_tokens=2_000, vocab_size=1000, name="ds")
    body = f'seq_len = 16\n[sources.a]\npath = "ds"\nweight = 1\n[[schedule]]\nposition = {position}\nweights = {{a = 1}}\n'
    (tmp_path / "mix.toml").write_text(body)
    code, out, err = run(capsys, command[0], tmp_path / "mix.toml", *command[1:])
    assert code == 1 and out == "" and err == (
        f"error: mixture schedule position {position:,} is not below 2**62 (4,611,686,018,427,387,904), the largest stream "
        "position sdl counts (a loader state holds positions below it); give a smaller position, or drop the entry: its "
        "weights would never be reached\n")


def test_bench_mixture_of_a_folder_says_a_toml_file_was_expected(tmp_path, token_dataset, capsys):
    folder = token_dataset(num_tokens=2_000, vocab_size=1000, name="ds")
    code, out, err = run(capsys, "bench", folder, "--mixture", "--steps", 2, "--seq-len", 16)
    assert code == 1 and out == ""
    assert err == (f"error: {folder} is a folder; expected a mixture config file (.toml) like configs/mix-web-code.toml; "
                   "give the .toml file itself (sdl bench reads a token dataset folder without --mixture)\n")
