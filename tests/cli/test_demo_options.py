"""`sdl demo`'s numeric options are refused before any work, in one line naming the flag."""

import pytest
from sdl.cli.main import main
from sdl.loader.errors import ConfigError


@pytest.mark.parametrize("flag, value, expected", [
    ("--bench-steps", -1, "--bench-steps is -1, expected an integer >= 0 (0 skips the bench)"),
    ("--batch-size", 0, "--batch-size is 0, expected a positive integer"),
    ("--batch-size", -1, "--batch-size is -1, expected a positive integer"),
    ("--seq-len", 0, "--seq-len is 0, expected a positive integer"),
    ("--max-docs", 0, "--max-docs is 0, expected a positive integer"),
])
def test_a_bad_option_is_one_line_before_anything_is_prepared(capsys, tmp_path, flag, value, expected):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), flag, str(value)])
    captured = capsys.readouterr()
    assert rc == 1 and captured.err == f"error: {expected}\n"
    assert captured.out == "" and not out.exists()  # no step ran: nothing prepared, nothing printed


def test_the_demo_config_refuses_the_same_values():
    from sdl.cli.walkthrough import DemoConfig

    with pytest.raises(ConfigError, match="--bench-steps is -1"):
        DemoConfig(out="x", bench_steps=-1)
    with pytest.raises(ConfigError, match="--batch-size is True"):
        DemoConfig(out="x", batch_size=True)
    assert DemoConfig(out="x", bench_steps=0, max_docs=None).bench_steps == 0
