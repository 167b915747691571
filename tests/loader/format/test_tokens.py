"""Reading a shard's document offsets: a missing, cut or wrong `.docs.npy` is a FormatError naming the file and the fix."""

import numpy as np
import pytest
from sdl.loader.errors import FormatError
from sdl.loader.format.tokens import read_docs


@pytest.mark.parametrize("damage, found", [
    (lambda p: p.unlink(), "found no such file"),
    (lambda p: p.write_bytes(p.read_bytes()[:10]), "found an unreadable file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-8]), "found an unreadable file"),
    (lambda p: np.save(p, np.arange(4, dtype=np.int64)), "found an array of shape (4,)"),
    (lambda p: np.save(p, np.zeros(5, dtype=np.float32)), "found an array of shape (5,) float32"),
])
def test_a_damaged_docs_file_is_refused_naming_it(tmp_path, damage, found):
    path = tmp_path / "shard-000000.docs.npy"
    np.save(path, np.array([0, 3, 9, 20, 41], dtype=np.int64))
    assert read_docs(path, 5).tolist() == [0, 3, 9, 20, 41]
    damage(path)
    with pytest.raises(FormatError) as caught:
        read_docs(path, 5)
    message = str(caught.value)
    assert message.startswith(f"{path}: expected 5 ") and found in message and f"sdl prepare --repair {tmp_path}" in message
