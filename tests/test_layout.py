"""The rooms stay rooms: which package may import which, no import cycle, small modules, a lean training path."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"cli": "sdl.cli", "prepare": "sdl.prepare", "loader": "sdl.loader"}

# Who may import whom, inside sdl (errors is open to all). Imports flow cli -> prepare -> loader, and inside
# loader: tooling (bench, checkpoint, integrations) -> runtime -> data -> sampling/index -> storage -> format.
ALLOWED = {
    "sdl.cli": set(),  # the top of the house: may import every room
    "sdl.prepare": {"sdl.prepare", "sdl.loader.format", "sdl.loader.storage"},
    "sdl.loader.format": {"sdl.loader.format"},
    "sdl.loader.storage": {"sdl.loader.storage", "sdl.loader.format"},
    "sdl.loader.index": {"sdl.loader.index", "sdl.loader.format", "sdl.loader.storage"},
    "sdl.loader.sampling": {"sdl.loader.sampling"},
    "sdl.loader.data": {"sdl.loader.data", "sdl.loader.index", "sdl.loader.sampling", "sdl.loader.format", "sdl.loader.storage"},
    "sdl.loader.runtime": {"sdl.loader.runtime", "sdl.loader.data", "sdl.loader.sampling", "sdl.loader.index", "sdl.loader.storage"},
    "sdl.loader.checkpoint": {"sdl.loader.checkpoint", "sdl.loader.sampling", "sdl.loader.data", "sdl.loader.format"},
    "sdl.loader.integrations": {"sdl.loader.integrations", "sdl.loader.runtime", "sdl.loader.sampling", "sdl.loader.data",
                                "sdl.loader.checkpoint", "sdl.loader.format"},
    "sdl.loader.bench": {"sdl.loader.bench", "sdl.loader.runtime", "sdl.loader.data", "sdl.loader.sampling", "sdl.loader.index",
                         "sdl.loader.format", "sdl.loader.storage"},
    "sdl.loader": {"sdl.loader"},  # loader/__init__.py: lazy re-exports of the public names
}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def sdl_imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The sdl modules `path` imports anywhere (top level or inside functions): `from p import m` counts as p.m when
    p.m is a module, else as p (the package's __init__)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("sdl.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sdl"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
    return out - {name}


def room(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["sdl", "loader"] and len(parts) > 2:
        return ".".join(parts[:3]) if parts[2] != "errors" else "sdl.loader.errors"
    return ".".join(parts[:2])


def test_each_room_imports_only_what_it_may():
    known = modules()
    bad = []
    for name, path in known.items():
        src = room(name)
        for target in sdl_imports(name, path, known):
            dst = room(target)
            if dst == "sdl.loader.errors":
                continue
            if src != "sdl.cli" and dst not in ALLOWED[src]:
                bad.append(f"{name} imports {target}")
    assert bad == []


def test_no_import_cycle_lazy_imports_included():
    known = modules()
    graph = {name: sdl_imports(name, path, known) & set(known) for name, path in known.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_no_module_over_300_lines_and_inits_only_reexport():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
    for path in ROOT.glob("loader/*/__init__.py"):
        tree = ast.parse(path.read_text())
        kinds = {type(node).__name__ for node in tree.body} - {"Expr", "ImportFrom", "Assign", "Import"}
        assert kinds == set(), f"{path}: {kinds}"


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True).stdout.strip()


def test_the_training_path_loads_no_tooling(tmp_path):
    from sdl.prepare.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "d", num_tokens=20_000, vocab_size=1000, tokens_per_shard=4096)
    out = run_python(f"""
        import sys
        from sdl.loader import TokenWindows, make_loader
        loader = make_loader(TokenWindows({str(tmp_path / 'd')!r}, seq_len=64), batch_size=4, seed=0, rank=0, world_size=1)
        batch = next(iter(loader))
        loader.state_dict()
        tooling = ("sdl.loader.bench", "sdl.loader.checkpoint", "sdl.loader.index.validation", "sdl.loader.index.join",
                   "sdl.prepare", "sdl.cli", "typer", "rich", "transformers", "datasets")
        print(sorted(m for m in sys.modules if m.startswith(tooling)))
    """)
    assert out == "[]"


def test_the_prepare_pipeline_does_not_import_torch():
    out = run_python("""
        import sys
        import sdl.prepare.pipeline
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "sdl.loader.")) and
                     not m.startswith(("sdl.loader.format", "sdl.loader.errors", "sdl.loader.storage"))))
    """)
    assert out == "[]"
