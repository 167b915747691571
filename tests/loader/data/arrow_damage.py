"""Damaged Arrow files read through every path, in a process of its own (a read past a memory map kills it):

    python arrow_damage.py named FORMAT FOLDER    # each damage of DAMAGES, each read of READS: one JSON line per read
    python arrow_damage.py sweep FORMAT FOLDER STEP   # 8 bytes of "X" or 0xff at every STEP-th byte of the first file

FORMAT is "stream" (what `save_to_disk` writes) or "file" (the IPC file format). A named line is {"damage", "read",
"outcome": "ok" | "FormatError" | the exception's type, "message"}; it is printed before the read is tried as
{"damage", "read", "outcome": "started"}, so that a killed process names what killed it. A sweep forks a child per
damage and prints {"outcomes": {outcome: count}, "bad": [[position, pattern, outcome], ...]} (a signal's name,
or an exception other than a one-line FormatError naming the file).
"""

import contextlib
import io
import json
import os
import shutil
import signal
import struct
import sys
from pathlib import Path

import datasets
import pyarrow as pa

ROWS = 120
READS = ("item", "items", "inspect", "loader0", "loader2")


def write(folder: Path, fmt: str) -> Path:
    """A dataset of 2 files (text, n, tags: a list of strings); the second file's path (a loader's workers read it:
    the training process reads a sample of the first when it starts them)."""
    data = datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(ROWS)], "n": list(range(ROWS)),
                                       "tags": [[f"t{j}" for j in range(i % 3)] for i in range(ROWS)]})
    if fmt == "stream":
        data.save_to_disk(str(folder), num_shards=2)
        return folder / "data-00001-of-00002.arrow"
    folder.mkdir(parents=True)
    table = data.data.table
    for part in range(2):
        with pa.ipc.new_file(str(folder / f"data-{part}.arrow"), table.schema) as writer:
            writer.write_table(table.slice(part * ROWS // 2, ROWS // 2), max_chunksize=25)
    return folder / "data-1.arrow"


def layout(path: Path) -> dict:
    """Where the parts of the first record batch lie in the file: {buffer name: (file offset, size)}, its body's offset."""
    source = pa.memory_map(str(path))
    base = source.read_buffer().address
    source.seek(0)
    reader = pa.ipc.open_file(source) if path.read_bytes()[:6] == b"ARROW1" else pa.ipc.open_stream(source)
    batch = reader.read_all().to_batches()[0]
    names = {"text": ("validity", "offsets", "bytes"), "n": ("validity", "numbers"),
             "tags": ("validity", "offsets", "child validity", "child offsets", "child bytes")}
    found = {f"{column} {name}": (buffer.address - base, buffer.size) for column in names
             for name, buffer in zip(names[column], batch.column(column).buffers()) if buffer is not None and buffer.size}
    return found | {"body": min(start for start, _ in found.values()) & ~7}


def descriptor(data: bytes, where: dict, name: str) -> int:
    """The file offset of buffer `name`'s (offset, length) pair in the record batch's metadata."""
    start, size = where[name]
    return data.index(struct.pack("<qq", start - where["body"], size))


def damages(path: Path) -> dict:
    """{damage: (file offset, bytes written there)}: the places a copy or a disk can damage."""
    data, where = path.read_bytes(), layout(path)
    footer = len(data) - 10 - struct.unpack_from("<i", data, len(data) - 10)[0]
    return {
        "schema": (footer if data[:6] == b"ARROW1" else 8, b"\xff" * 8),
        "buffer offset in batch metadata": (descriptor(data, where, "tags offsets"), b"\x00" * 8),
        "buffer length in batch metadata": (descriptor(data, where, "text offsets") + 8, b"\x00" * 8),
        "string offsets": (where["text offsets"][0] + 40, b"XXXXXXXX"),  # the report: rows 9-11 of the first file
        "list offsets": (where["tags offsets"][0] + 40, b"XXXXXXXX"),
        "nested string offsets": (where["tags child offsets"][0] + 20, b"\xff" * 8),
        "string bytes": (where["text bytes"][0] + 40, b"\xff"),  # not UTF-8
        "number bytes": (where["n numbers"][0] + 80, b"XXXXXXXX"),  # other numbers: nothing to see, nothing to crash
    }


def damaged(pristine: Path, folder: Path, rel: str, position: int, patch: bytes) -> Path:
    shutil.copytree(pristine, folder)
    with open(folder / rel, "r+b") as handle:
        handle.seek(position)
        handle.write(patch)
    return folder


def read(folder: Path, how: str) -> None:
    """Every row of `folder`, one way; raises what that way raises."""
    from sdl.cli.main import main
    from sdl.loader import ArrowRows, make_loader
    from sdl.loader.errors import FormatError

    if how == "inspect":
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["inspect", str(folder), "--show", str(ROWS)])
        if code:
            assert code == 1 and err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1, err.getvalue()
            raise FormatError(err.getvalue().removeprefix("error: ").strip())
        return
    rows = ArrowRows(folder)
    if how == "item":
        for i in range(len(rows)):
            rows[i]
    elif how == "items":
        rows.__getitems__(list(range(len(rows))))
    else:
        for _ in make_loader(rows, batch_size=8, shuffle=False, num_workers=int(how[-1]), device="cpu"):
            pass


def outcome(folder: Path, rel: str, how: str) -> tuple[str, str]:
    from sdl.loader.errors import FormatError

    try:
        read(folder, how)
    except FormatError as exc:
        text = str(exc)
        return ("FormatError" if "\n" not in text and rel in text else "FormatError without the file in one line"), text
    except Exception as exc:  # what the law forbids: reported, not raised
        return type(exc).__name__, str(exc)[:300]
    return "ok", ""


def named(fmt: str, root: Path) -> None:
    target = write(root / "pristine", fmt)
    for damage, (position, patch) in damages(target).items():
        for how in READS:
            print(json.dumps({"damage": damage, "read": how, "outcome": "started"}), flush=True)
            folder = damaged(root / "pristine", root / f"{damage}-{how}".replace(" ", "_"), target.name, position, patch)
            result, message = outcome(folder, target.name, how)
            print(json.dumps({"damage": damage, "read": how, "outcome": result, "message": message}), flush=True)


def sweep(fmt: str, root: Path, step: int) -> None:
    from sdl.cli.main import main  # noqa: F401  imported once (torch too), before the forks
    from sdl.loader import ArrowRows  # noqa: F401

    target = write(root / "pristine", fmt)
    counts, bad = {}, []
    for position in range(0, target.stat().st_size, step):
        for pattern in (b"XXXXXXXX", b"\xff" * 8):
            pid = os.fork()
            if pid == 0:
                folder = damaged(root / "pristine", root / f"at-{position}", target.name, position, pattern)
                result, _ = outcome(folder, target.name, "items")
                os._exit({"ok": 0, "FormatError": 1}.get(result, 2))
            _, status = os.waitpid(pid, 0)
            shutil.rmtree(root / f"at-{position}", ignore_errors=True)
            result = (signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status)
                      else {0: "ok", 1: "FormatError"}.get(os.WEXITSTATUS(status), "other"))
            counts[result] = counts.get(result, 0) + 1
            if result not in ("ok", "FormatError"):
                bad.append([position, pattern.decode("latin-1"), result])
    print(json.dumps({"outcomes": counts, "bad": bad}), flush=True)


if __name__ == "__main__":
    datasets.disable_progress_bars()
    if sys.argv[1] == "named":
        named(sys.argv[2], Path(sys.argv[3]))
    else:
        sweep(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
