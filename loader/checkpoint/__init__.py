"""sdl.loader.checkpoint: loader states inside checkpoints — find, load safely, check against a dataset, rewrite.

Tooling for `sdl reshard-ckpt` and the demo; the training path never imports it.
"""

from sdl.loader.checkpoint.check import (
                                        WINDOW_SETTINGS,
                                        DatasetCheck,
                                        check_dataset,
                                        rebind_state,
)
from sdl.loader.checkpoint.find import (
                                        SUFFIXES,
                                        Checkpoint,
                                        KeyPath,
                                        find_states,
                                        format_key,
                                        merge_streams,
                                        read_checkpoint,
                                        read_checkpoints,
                                        resolve_inputs,
                                        searched_keys,
)
from sdl.loader.checkpoint.rewrite import (
                                        RewriteResult,
                                        output_paths,
                                        replace_states,
                                        rewrite_checkpoint,
                                        write_checkpoint,
)
from sdl.loader.checkpoint.safe_load import load_checkpoint, safe_globals

__all__ = [
    "SUFFIXES", "WINDOW_SETTINGS", "Checkpoint", "DatasetCheck", "KeyPath", "RewriteResult", "check_dataset", "find_states",
    "format_key", "load_checkpoint", "merge_streams", "output_paths", "read_checkpoint", "read_checkpoints", "rebind_state",
    "replace_states", "resolve_inputs", "rewrite_checkpoint", "safe_globals", "searched_keys", "write_checkpoint",
]
