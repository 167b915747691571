"""Input resolution: files, folders, globs, `stdlib:`, `save_to_disk` folders and HuggingFace dataset names -> sorted `SourceFile`s.

Every input becomes a list of files of four kinds: `text` (the whole file is one document), `jsonl`
(one JSON object per line, optionally gzipped), `parquet` and `arrow` (one document per row). A
HuggingFace `save_to_disk` folder or a dataset name in the local cache is resolved to its Arrow files.
Each argument's expansion is sorted by path, so the order never depends on directory listing order.
A folder is walked file by file, except that a `save_to_disk` dataset inside it is refused (walked, it
would read its JSON metadata as documents and every split's rows): it must be an input of its own,
where `--split` picks one split. A dangling symlink or a symlink loop among the inputs is refused, not
skipped, so that no file the user meant to include is silently left out.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from sdl.loader.errors import ConfigError, InputError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow",)
STDLIB_SPEC = "stdlib:"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceFile:
    path: str
    kind: str       # text | jsonl | parquet | arrow
    size: int
    fingerprint: str  # file_fingerprint of the file when it was listed
    identity: tuple[int, int]  # (st_dev, st_ino) when it was listed: the same for every name of the file, hard links too

    def to_dict(self) -> dict:
        """The manifest's `sources` entry; the fingerprint changes when the file is rewritten."""
        return {"path": self.path, "size": self.size, "fingerprint": self.fingerprint}

    def real_path(self) -> str:
        """The file itself, however it was spelled (`./data/x.jsonl`, `data/x.jsonl`, an absolute path, a symlink)."""
        return os.path.realpath(self.path)


def file_fingerprint(stat: os.stat_result) -> str:
    """What tells that a file was written or replaced, without reading it: its size and mtime, and its inode and inode
    change time, since mtime can be set back (`touch -r`, `rsync -t`, `cp -p`, editors that keep it) and ctime
    cannot: the kernel moves it on every write (and on a chmod or a new hard link, which count as a change too)."""
    return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns},ino={stat.st_ino},ctime_ns={stat.st_ctime_ns}"


def is_file_fingerprint(text: object) -> bool:
    """Whether `text` is a file_fingerprint (a journal of an earlier sdl holds "size=…,mtime_ns=…" only)."""
    return isinstance(text, str) and re.fullmatch(r"size=\d+,mtime_ns=-?\d+,ino=\d+,ctime_ns=-?\d+", text) is not None


def kind_of(path: str | Path, text_suffixes: tuple[str, ...]) -> str | None:
    name = Path(path).name.lower()
    for kind, suffixes in (("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES), ("arrow", ARROW_SUFFIXES),
                           ("text", tuple(s.lower() for s in text_suffixes))):
        if name.endswith(suffixes):
            return kind
    return None


def supported_suffixes(text_suffixes: tuple[str, ...]) -> str:
    return ", ".join((*text_suffixes, *JSONL_SUFFIXES, *PARQUET_SUFFIXES, *ARROW_SUFFIXES))


def _source(path: Path, kind: str) -> SourceFile:
    try:
        stat = path.stat()
    except OSError as exc:
        raise InputError(_unreadable(path, exc)) from None
    return SourceFile(path=os.path.normpath(path), kind=kind, size=stat.st_size, fingerprint=file_fingerprint(stat),
                      identity=(stat.st_dev, stat.st_ino))


def _unreadable(path: Path, exc: OSError) -> str:
    """Why an input file listed by name cannot be opened, and what to do, in words."""
    if path.is_symlink():
        target = os.readlink(path)
        what = ("a symbolic link loop" if exc.errno == errno.ELOOP else "a dangling symbolic link") + f" (-> {target})"
        return f"{path}: {what}, expected a readable input file; fix or remove the link (inputs with broken links are refused, not skipped)"
    return f"{path}: cannot read ({exc.strerror or exc}); check the file and its permissions"


def stdlib_files() -> list[Path]:
    """The running interpreter's standard-library `.py` sources, sorted (site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__"}
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        found += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _walk(folder: Path, text_suffixes: tuple[str, ...], matched: frozenset[Path] = frozenset(), output: str | None = None) -> list[SourceFile]:
    """Supported files under `folder` (recursively, hidden folders and the output folder `output` (a real path)
    skipped), sorted by relative path. A link to a folder inside is refused unless it is one of `matched` (the folders
    a glob matched: walked as inputs of their own)."""
    if _is_saved_dataset(folder):
        return []
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__" and os.path.realpath(Path(root, d)) != output)
        for linked in (Path(root, d) for d in dirs if Path(root, d).is_symlink() and Path(root, d) not in matched):  # os.walk
            # would skip it silently
            raise InputError(f"{linked}: a symbolic link to a folder (-> {os.readlink(linked)}) inside the input folder {folder}, "
                             "which sdl prepare does not follow (a link back up would read files twice); pass its target as "
                             "an input of its own, or replace the link by the folder")
        _refuse_nested_dataset(folder, [Path(root, d) for d in dirs])
        for name in names:
            kind = kind_of(name, text_suffixes)
            if kind and not name.startswith("."):
                found.append((Path(root, name).relative_to(folder).as_posix(), Path(root, name), kind))
    return [_source(path, kind) for _, path, kind in sorted(found)]


def _is_saved_dataset(folder: Path) -> bool:
    """A `save_to_disk` folder: a DatasetDict's `dataset_dict.json`, or a Dataset's `state.json` beside its info or Arrow files."""
    if (folder / "dataset_dict.json").is_file():
        return True
    return (folder / "state.json").is_file() and ((folder / "dataset_info.json").is_file() or any(folder.glob("*.arrow")))


def _is_token_dataset(folder: Path) -> bool:
    """An sdl token dataset (sdl prepare's output): its manifest beside its cache folder or its shards."""
    return (folder / "manifest.json").is_file() and ((folder / ".sdl").is_dir() or any(folder.glob("shard-*.npy")))


def _refuse_token_dataset(folder: Path) -> None:
    if _is_token_dataset(folder):
        raise InputError(f"{folder}: a token dataset (sdl prepare's output) given as an input, whose manifest would be read "
                         "as a document; give the text it was made from (a token dataset is read by sdl index, inspect, bench)")


def _refuse_nested_dataset(folder: Path, subfolders: list[Path]) -> None:
    """Refuse a `save_to_disk` dataset inside an input folder: walked file by file, its metadata would be read as
    JSONL and every split's Arrow files tokenized (a test split leaking into training); and another sdl token dataset
    (its manifest read as a document)."""
    for sub in subfolders:
        if _is_token_dataset(sub):
            raise InputError(f"{sub}: a token dataset (sdl prepare's output) inside the input folder {folder}, whose manifest "
                             "would be read as a document; move it out of that folder, or name the folder's other files (or a "
                             "glob) instead")
        if _is_saved_dataset(sub):
            raise InputError(f"{sub}: a HuggingFace save_to_disk dataset inside the input folder {folder}, which would read its metadata "
                             f"and every split as documents; pass {sub} as an input of its own (with --split NAME for a DatasetDict), "
                             "and move it out of that folder or name the folder's other files (or a glob) instead")


def _saved_dataset_files(folder: Path, split: str) -> list[SourceFile]:
    """The Arrow files of a `Dataset.save_to_disk` folder (or of `split` in a `DatasetDict` folder), in order."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise InputError(f"{folder}: a saved DatasetDict without split {split!r} (its splits: {', '.join(splits)}); pass --split NAME")
        folder = folder / split
    try:
        state = json.loads((folder / "state.json").read_text())
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{folder}: unreadable save_to_disk state.json ({exc}); save the dataset again with save_to_disk") from None
    return [_source(folder / name, "arrow") for name in names]


def _dataset_name_files(name: str, split: str) -> list[SourceFile] | None:
    """The cached Arrow files of a HuggingFace dataset `name` that `datasets` loads offline; None if it cannot."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split)
    except Exception:  # any failure means "not available locally"; the caller reports a missing path
        return None
    if getattr(dataset, "_indices", None) is not None or not dataset.cache_files:
        raise InputError(f"dataset {name!r} (split {split!r}) is not a plain set of cached Arrow files; "
                         "save it with Dataset.save_to_disk and pass that folder")
    return [_source(Path(entry["filename"]), "arrow") for entry in dataset.cache_files]


def _looks_like_dataset_name(spec: str) -> bool:
    return not (spec.startswith((".", "/", "~")) or os.sep + os.sep in spec or spec.count("/") > 1
                or kind_of(spec, (".txt",)) is not None)


def _expand(spec: str, text_suffixes: tuple[str, ...], split: str, output: str | None = None) -> list[SourceFile]:
    expected = supported_suffixes(text_suffixes)
    if spec == STDLIB_SPEC:
        return [_source(path, "text") for path in stdlib_files()]
    if _GLOB_CHARS & set(spec):
        matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
        if not matches:
            raise InputError(f"{spec}: the pattern matches no files; check the path (quote it so the shell does not expand it)")
        found, folders = [], frozenset(Path(match) for match in matches if os.path.isdir(match))
        for match in map(Path, matches):
            if match.is_dir():
                if os.path.realpath(match) != output:
                    _refuse_token_dataset(match)
                    found += _saved_dataset_files(match, split) if _is_saved_dataset(match) else _walk(match, text_suffixes, folders, output)
            elif (kind := kind_of(match, text_suffixes)) is not None:
                found.append(_source(match, kind))
        if not found:
            raise InputError(f"{spec}: the pattern matches no input files; expected files ending in {expected}")
        return found
    path = Path(spec).expanduser()
    if path.is_dir():
        if os.path.realpath(path) == output:
            raise InputError(f"{spec}: the input folder is also the output folder, where sdl prepare writes its shards; choose "
                             f"another output folder (one inside the input, such as {Path(spec, 'tokens')}, is skipped as input)")
        if _is_saved_dataset(path):
            return _saved_dataset_files(path, split)
        _refuse_token_dataset(path)
        found = _walk(path, text_suffixes, output=output)
        if not found:
            raise InputError(f"{path}: the folder holds no input files; expected files ending in {expected}")
        return found
    if path.is_file():
        kind = kind_of(path, text_suffixes)
        if kind is None:
            raise InputError(f"{path}: unsupported file type {''.join(path.suffixes) or '(no suffix)'!r}; expected a file ending in "
                             f"{expected} (to read it as plain text, add its suffix with --text-suffix)")
        return [_source(path, kind)]
    if _looks_like_dataset_name(spec) and (files := _dataset_name_files(spec, split)) is not None:
        return files
    raise InputError(f"{spec}: no such file or folder (nor a dataset in the local HuggingFace cache); check the path")


def resolve_sources(specs: tuple[str, ...], text_suffixes: tuple[str, ...] = (".txt",), split: str = "train",
                    out: str | Path | None = None) -> tuple[SourceFile, ...]:
    """All input files, in argument order, each argument's expansion sorted; a file named twice (in any spelling: a
    symlink, an absolute path, a hard link) kept once, under its first name; none inside the output folder `out` (`sdl
    prepare data/ data/tokens` must not read its own manifest as a document)."""
    seen, files, inside = set(), [], []
    output = os.path.realpath(out) if out is not None else None
    for spec in specs:
        for source in _expand(spec, text_suffixes, split, output):
            real = source.real_path()  # one file however spelled (a symlink, ./x, an absolute path): read once
            if output is not None and real.startswith(output + os.sep):
                inside.append(source.path)  # a file a glob matched inside the output folder (its manifest.json)
            elif real not in seen and source.identity not in seen:  # a hard link has its own real path, not its own inode
                seen.update((real, source.identity) if source.identity[1] else (real,))  # no inode numbers: the path alone
                files.append(source)
    if not files and inside:
        raise InputError(f"every input ({_names(inside)}) lies inside the output folder {out}, whose files sdl prepare writes and "
                         "never reads as inputs; choose an output folder outside the inputs")
    if all(source.size == 0 for source in files):
        names = ", ".join(s.path for s in files[:3]) + (" …" if len(files) > 3 else "")
        raise InputError(f"the input is empty: {names} hold{'s' if len(files) == 1 else ''} 0 bytes; expected at least one document")
    return tuple(files)


def check_options_apply(specs: tuple[str, ...], files: tuple[SourceFile, ...], split: str | None, text_field: str | None) -> None:
    """Refuse a `split` (None: the default) when no input has splits, and a `text_field` (None: the default) when every
    input is plain text: either would be ignored, and a run the user believes reads another split or field would not."""
    if split is not None and not any(_takes_split(spec) for spec in specs):
        raise ConfigError(f"--split {split} picks a split of a HuggingFace dataset name or a saved DatasetDict folder, and no input is "
                          f"one ({_names(specs)}); drop --split (or split in --config; a save_to_disk Dataset folder holds one split)")
    if text_field is not None and all(source.kind == "text" for source in files):
        raise ConfigError(f"--text-field {text_field} names the text field of JSONL, Parquet or Arrow records, and every input is "
                          f"plain text, read whole ({_names([f.path for f in files])}); drop --text-field (or text_field in --config)")


def _takes_split(spec: str) -> bool:
    """Whether the input `spec` is read through a split: a DatasetDict folder (or a glob matching one), a dataset name."""
    if spec == STDLIB_SPEC:
        return False
    if _GLOB_CHARS & set(spec):
        return any((Path(match) / "dataset_dict.json").is_file() for match in glob.glob(os.path.expanduser(spec), recursive=True))
    path = Path(spec).expanduser()
    return (path / "dataset_dict.json").is_file() if path.exists() else _looks_like_dataset_name(spec)


def _names(paths: list[str] | tuple[str, ...]) -> str:
    return ", ".join(paths[:3]) + (" …" if len(paths) > 3 else "")


def split_for_job(files: tuple[SourceFile, ...], num_jobs: int, job_index: int) -> tuple[tuple[SourceFile, ...], bool]:
    """This job's files, and whether records are split too.

    With at least as many files as jobs, job k takes the k-th of `num_jobs` contiguous runs of the
    sorted files. With fewer (e.g. one big JSONL file), every job reads every file and keeps record
    r of file i when (i + r) % num_jobs == job_index.
    """
    if num_jobs == 1:
        return files, False
    n = len(files)
    if n >= num_jobs:
        return files[job_index * n // num_jobs:(job_index + 1) * n // num_jobs], False
    return files, True
