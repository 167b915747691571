"""sdl.prepare: sources -> tokenizer -> fixed-size shard writer -> manifest."""

__all__: list[str] = []
