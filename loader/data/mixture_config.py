"""MixtureConfig: a mixture described as data (what `configs/mix-*.toml` holds), and the Mixture it builds.

    seq_len = 2048                # token sources: window length (and stride, unless stride = ...)
    num_samples = 1_000_000       # optional: positions per epoch (default: one pass of the first source to run out)
    [sources.web]
    path = "/data/tokens/fineweb"  # relative paths are relative to the TOML file
    weight = 0.75
    [sources.code]
    path = "/data/tokens/stack"
    weight = 0.25
    kind = "tokens"                # tokens (default) | zarr | arrow
    [[schedule]]                   # optional, any number: weights from this stream position (samples) on
    position = 5_000_000           # > 0, increasing; for step S at a constant global batch G: S·G
    weights = { web = 0.5, code = 0.5 }

Sources keep the file's order (their `source` index in batches). The sources' weights hold from position 0 to
the first schedule entry (see `sdl.loader.data.mixture_schedule` for the unit and what it means across epochs).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdl.loader.data.mixture_schedule import check_schedule, check_weights, is_weight, shown_weight
from sdl.loader.errors import ConfigError
from sdl.loader.sampling.state import LIMIT

KINDS = ("tokens", "zarr", "arrow")
EXAMPLE = "configs/mix-web-code.toml"


@dataclass(frozen=True, kw_only=True, slots=True)
class MixtureSource:
    name: str
    path: str
    weight: float
    kind: str = "tokens"
    split: str | None = None  # arrow: the split of a dataset holding several

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError(f"mixture source {self.name!r} has path = {self.path!r}; expected a string naming the "
                              f"dataset, e.g. path = \"/data/tokens/fineweb\" (relative paths are relative to the TOML file)")
        weight = self.weight
        if not is_weight(weight):
            raise ConfigError(f"mixture source {self.name!r} has weight = {shown_weight(weight)}; expected a finite number >= 0, e.g. "
                              "weight = 0.25 (weights are relative: 3 and 1 give 75% and 25%)")
        object.__setattr__(self, "weight", float(weight))  # a TOML integer weight reads as the same float
        if self.kind not in KINDS:
            raise ConfigError(f"mixture source {self.name!r} has kind {self.kind!r}, expected one of {', '.join(KINDS)}")
        if self.split is not None and not isinstance(self.split, str):
            raise ConfigError(f"mixture source {self.name!r} has split = {self.split!r}; expected a string naming a split "
                              "of the Arrow dataset, e.g. split = \"train\"")
        if self.split is not None and self.kind != "arrow":  # a token source's split is TokenWindows' split_rate, not a name
            raise ConfigError(f"mixture source {self.name!r} ({self.kind}) has split = {self.split!r}, which only Arrow "
                              "sources take (a named split of the dataset); drop it, or give a folder holding only the "
                              "samples wanted")


@dataclass(frozen=True, kw_only=True, slots=True)
class MixtureConfig:
    sources: tuple[MixtureSource, ...]
    seq_len: int = 2048
    stride: int | None = None
    num_samples: int | None = None
    schedule: tuple[tuple[int, dict[str, float]], ...] = ()  # as written (build() normalises)

    def __post_init__(self) -> None:
        _positive("seq_len", self.seq_len, "tokens per window, e.g. seq_len = 2048")
        if self.stride is not None:
            _positive("stride", self.stride, "tokens between window starts, or no stride for seq_len")
        if self.num_samples is not None:
            _positive("num_samples", self.num_samples,
                      "positions per epoch, or no num_samples for one pass of the source that runs out first")
            if self.num_samples >= LIMIT:
                raise ConfigError(f"mixture config has num_samples = {self.num_samples:,}; expected an integer below 2**62 "
                                  f"({LIMIT:,}: a loader state holds counts below it): give fewer positions per epoch, or no "
                                  "num_samples for one pass of the source that runs out first")
        names = [source.name for source in self.sources]
        check_weights({source.name: source.weight for source in self.sources}, names)
        check_schedule(self.schedule, names)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> MixtureConfig:
        """From a parsed TOML file; relative source paths are resolved against `base` (the file's folder)."""
        unknown = sorted(set(data) - {"sources", "seq_len", "stride", "num_samples", "schedule"})
        if unknown:
            raise ConfigError(f"mixture config has unknown keys {unknown}; expected sources, seq_len, stride, num_samples, schedule")
        table = data.get("sources")
        if not isinstance(table, dict) or not table:
            raise ConfigError("mixture config needs a [sources.NAME] table per source, each with path and weight")
        sources = []
        for name, entry in table.items():
            if not isinstance(entry, dict) or "path" not in entry or "weight" not in entry:
                raise ConfigError(f"mixture source {name!r} needs path = \"...\" and weight = <number>; found {entry!r}")
            extra = sorted(set(entry) - {"path", "weight", "kind", "split"})
            if extra:
                raise ConfigError(f"mixture source {name!r} has unknown keys {extra}; expected path, weight, kind, split")
            source = MixtureSource(name=str(name), path=entry["path"], weight=entry["weight"],
                                   kind=entry.get("kind", "tokens"), split=entry.get("split"))
            path = Path(source.path).expanduser()
            sources.append(replace(source, path=str(path if path.is_absolute() or base is None else base / path)))
        return cls(sources=tuple(sources), seq_len=data.get("seq_len", 2048), stride=data.get("stride"),
                   num_samples=data.get("num_samples"), schedule=_schedule(data.get("schedule", [])))

    def to_dict(self) -> dict[str, Any]:
        """The TOML file's content (from_dict(to_dict()) gives this config back)."""
        sources = {s.name: {"path": s.path, "weight": s.weight, "kind": s.kind} | ({"split": s.split} if s.split else {})
                   for s in self.sources}
        optional = {key: value for key, value in (("stride", self.stride), ("num_samples", self.num_samples)) if value is not None}
        schedule = {"schedule": [{"position": at, "weights": dict(w)} for at, w in self.schedule]} if self.schedule else {}
        return {"seq_len": self.seq_len, **optional, "sources": sources, **schedule}

    def build(self) -> Any:
        """The Mixture this config describes."""
        from sdl.loader.data.mixture import Mixture

        datasets = {source.name: self.open_source(source) for source in self.sources}
        return Mixture(datasets, weights={s.name: s.weight for s in self.sources}, num_samples=self.num_samples,
                       schedule=self.schedule)

    def open_source(self, source: MixtureSource) -> Any:
        if source.kind == "tokens":
            from sdl.loader.data.windows import TokenWindows

            return TokenWindows(source.path, seq_len=self.seq_len, stride=self.stride)
        if source.kind == "zarr":
            from sdl.loader.data.zarr_samples import ZarrSamples

            return ZarrSamples(source.path)
        from sdl.loader.data.arrow_rows import ArrowRows

        return ArrowRows(source.path, split=source.split)


def _positive(key: str, value: Any, meaning: str) -> None:
    """A count the config gives: an integer > 0 (a TOML `true` or `"2048"` is refused, not converted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"mixture config has {key} = {value!r}; expected an integer > 0: {meaning}")


def _schedule(entries: Any) -> tuple[tuple[int, dict[str, float]], ...]:
    """`[[schedule]]` tables ({position = N, weights = {name = w}}) as (position, weights) pairs."""
    if not isinstance(entries, list) or any(not isinstance(e, dict) or set(e) != {"position", "weights"} for e in entries):
        raise ConfigError(f"mixture schedule is {entries!r}; expected [[schedule]] tables, each with position = <samples> "
                          "and weights = {name = weight, ...}")
    return tuple((entry["position"], entry["weights"]) for entry in entries)


def read_mixture_config(path: str | Path) -> MixtureConfig:
    """A `configs/mix-*.toml` file as a MixtureConfig (sources relative to the file)."""
    import tomllib

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; expected a mixture config file (.toml) like {EXAMPLE}; give the .toml "
                          "file itself (sdl bench reads a token dataset folder without --mixture)")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the mixture config ({exc}); expected a TOML file like {EXAMPLE}") from None
    return MixtureConfig.from_dict(data, base=path.parent)
