"""MixtureConfig's own keys are type-checked: a wrong type is a one-line ConfigError naming the key, never a traceback."""

from pathlib import Path

import pytest
from sdl.loader.data.mixture_config import (
    EXAMPLE,
    MixtureConfig,
    MixtureSource,
    read_mixture_config,
)
from sdl.loader.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SOURCES = '[sources.web]\npath = "web"\nweight = 3\n[sources.code]\npath = "code"\nweight = 1\n'

BAD = [
    ('seq_len = "long"\n' + SOURCES, "mixture config has seq_len = 'long'; expected an integer > 0: tokens per window"),
    ("seq_len = true\n" + SOURCES, "mixture config has seq_len = True; expected an integer > 0"),
    ("seq_len = 64.5\n" + SOURCES, "mixture config has seq_len = 64.5; expected an integer > 0"),
    ("seq_len = 0\n" + SOURCES, "mixture config has seq_len = 0; expected an integer > 0"),
    ('stride = "8"\n' + SOURCES, "mixture config has stride = '8'; expected an integer > 0"),
    ("num_samples = 0\n" + SOURCES, "mixture config has num_samples = 0; expected an integer > 0: positions per epoch"),
    ('num_samples = "all"\n' + SOURCES, "mixture config has num_samples = 'all'"),
    ("num_samples = 4611686018427387904\n" + SOURCES,  # was accepted, then blamed on a corrupt checkpoint
     r"mixture config has num_samples = 4,611,686,018,427,387,904; expected an integer below 2\*\*62 .*: give fewer positions"),
    (SOURCES.replace("weight = 3", 'weight = "half"'), "mixture source 'web' has weight = 'half'; expected a finite number >= 0"),
    (SOURCES.replace("weight = 3", "weight = true"), "mixture source 'web' has weight = True; expected a finite number >= 0"),
    (SOURCES.replace("weight = 3", "weight = -1"), "mixture source 'web' has weight = -1; expected a finite number >= 0"),
    (SOURCES.replace("weight = 3", "weight = nan"), "mixture source 'web' has weight = nan"),
    (SOURCES.replace("weight = 3", "weight = 1" + "0" * 400),  # was an OverflowError
     "mixture source 'web' has weight = <an integer of 401 digits, beyond a float's range>; expected a finite number >= 0"),
    (SOURCES.replace("weight = 3", "weight = 0").replace("weight = 1", "weight = 0"),
     r"mixture weights are \{'web': 0.0, 'code': 0.0\}; expected finite numbers >= 0, at least one > 0"),
    (SOURCES.replace('path = "web"', "path = 3"), "mixture source 'web' has path = 3; expected a string naming the dataset"),
    (SOURCES.replace('path = "web"', 'path = ""'), "mixture source 'web' has path = ''; expected a string"),
    (SOURCES + 'kind = 3\n', "mixture source 'code' has kind 3, expected one of tokens, zarr, arrow"),
    (SOURCES + 'split = 1\n', "mixture source 'code' has split = 1; expected a string naming a split"),
    (SOURCES + "[[schedule]]\nposition = \"10\"\nweights = { web = 1, code = 1 }\n",
     r"mixture schedule position '10' \(after 0\) is not an integer > 0"),
    (SOURCES + "[[schedule]]\nposition = 10\nweights = { web = \"a\", code = 1 }\n",
     r"mixture schedule weights at position 10 are \{'web': 'a', 'code': 1\}; expected finite numbers >= 0"),
    (SOURCES + "[[schedule]]\nposition = 10\nweights = 1\n", "mixture schedule weights at position 10 are 1; expected a table"),
    ("schedule = 3\n" + SOURCES, r"mixture schedule is 3; expected \[\[schedule\]\] tables"),
]


@pytest.mark.parametrize("body, message", BAD)
def test_a_wrong_type_or_value_is_a_one_line_config_error(tmp_path, body, message):
    (tmp_path / "mix.toml").write_text(body)
    with pytest.raises(ConfigError, match=message) as raised:
        read_mixture_config(tmp_path / "mix.toml")
    assert len(str(raised.value).splitlines()) == 1


def test_good_values_read_as_written(tmp_path):
    (tmp_path / "mix.toml").write_text("seq_len = 64\nstride = 32\nnum_samples = 100\n" + SOURCES)
    config = read_mixture_config(tmp_path / "mix.toml")
    assert (config.seq_len, config.stride, config.num_samples) == (64, 32, 100)
    assert [(s.name, s.weight, s.path) for s in config.sources] == [("web", 3.0, str(tmp_path / "web")), ("code", 1.0, str(tmp_path / "code"))]
    assert all(isinstance(s.weight, float) for s in config.sources) and MixtureConfig.from_dict(config.to_dict()) == config


def test_a_zero_weight_phased_in_by_the_schedule_is_accepted(tmp_path):
    body = SOURCES.replace("weight = 1", "weight = 0") + "[[schedule]]\nposition = 10\nweights = { web = 1, code = 1 }\n"
    (tmp_path / "mix.toml").write_text(body)
    config = read_mixture_config(tmp_path / "mix.toml")
    assert [s.weight for s in config.sources] == [3.0, 0.0] and config.schedule == ((10, {"web": 1, "code": 1}),)


def test_direct_construction_checks_the_same_rules():
    source = MixtureSource(name="web", path="/data/web", weight=1)
    with pytest.raises(ConfigError, match="mixture config has seq_len = '64'"):
        MixtureConfig(sources=(source,), seq_len="64")
    with pytest.raises(ConfigError, match="mixture source 'web' has weight = '1'"):
        MixtureSource(name="web", path="/data/web", weight="1")


def test_a_folder_or_unreadable_file_points_to_the_shipped_example(tmp_path):
    assert (ROOT / EXAMPLE).is_file()
    with pytest.raises(ConfigError, match=f"^{tmp_path} is a folder; expected a mixture config file \\(.toml\\) like {EXAMPLE}"):
        read_mixture_config(tmp_path)
    (tmp_path / "bad.toml").write_text("[sources.a\n")
    with pytest.raises(ConfigError, match=f"cannot read the mixture config .*; expected a TOML file like {EXAMPLE}$"):
        read_mixture_config(tmp_path / "bad.toml")
