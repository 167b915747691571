"""sdl.prepare: sources -> tokenizer -> fixed-size shard writer -> manifest."""

from sdl.prepare.config import PrepareConfig, load_config_file, make_config
from sdl.prepare.demo import demo_config, demo_sources
from sdl.prepare.pipeline import PrepareProgress, PrepareReport, prepare
from sdl.prepare.repair import RepairReport, repair
from sdl.prepare.sources import SourceFile, resolve_sources
from sdl.prepare.synthetic import write_synthetic_dataset
from sdl.prepare.tokenizer import TokenizerSpec, load_tokenizer

__all__ = [
    "PrepareConfig", "PrepareProgress", "PrepareReport", "RepairReport", "SourceFile", "TokenizerSpec", "demo_config", "demo_sources",
    "load_config_file", "load_tokenizer", "make_config", "prepare", "repair", "resolve_sources", "write_synthetic_dataset",
]
