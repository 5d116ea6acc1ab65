"""The package's import structure: layers that never import upward, no cycles, leaf lessons.

Read from the code's own imports (every ``import``/``from ... import`` anywhere in a module,
function-level ones included), so a new upward import fails here with the names involved.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "labutils"

# Lowest first. A module may import its own layer or any layer below, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    # foundations: errors, config, facts, the Backend protocol (a leaf), sync wrappers
    ("labutils", "labutils._aio", "labutils._progress", "labutils._bundled", "labutils.config",
     "labutils.errors", "labutils.catalog", "labutils.vllm_args", "labutils.protocol"),
    ("labutils.kube",),  # Kubernetes vocabulary: labels, object accessors, the HPA algorithm
    ("labutils.manifests", "labutils.metrics", "labutils.loadtest", "labutils.sim",
     "labutils.realengine"),
    ("labutils.targets", "labutils.monitored_load", "labutils.drills", "labutils.sizing",
     "labutils.security", "labutils.secretscan", "labutils.lab", "labutils.instructor"),
    ("labutils.figures",),
    ("labutils.lessons",),  # per-notebook helpers: nothing imports them
    ("labutils.cli",),  # the command line: nothing imports it
)  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "_bundled" in path.parts and path.name != "__init__.py":
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = _resolve(f"{node.module}.{alias.name}") or _resolve(node.module)
                if target:
                    out.add(target)
        elif isinstance(node, ast.Import):
            out |= {t for a in node.names if (t := _resolve(a.name))}
    out.discard(module)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int:
    best = (-1, -1)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), index))
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best[1]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in GRAPH.items()
        for t in sorted(targets)
        if _layer(t) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_import_graph_has_no_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_lessons_and_cli_are_leaves() -> None:
    for kind in ("labutils.lessons", "labutils.cli"):
        importers = [
            f"{m} -> {t}"
            for m, targets in GRAPH.items()
            for t in targets
            if t.startswith(kind + ".") and not m.startswith(kind)
        ]
        assert not importers, importers
    between = [
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if m.startswith("labutils.lessons.")
        for t in targets
        if t.startswith("labutils.lessons.")
    ]
    assert not between, f"lesson modules import each other: {between}"


def test_load_generation_does_not_import_metrics_analysis() -> None:
    bad = [f"{m} -> {t}" for m, ts in GRAPH.items() if m.startswith("labutils.loadtest")
           for t in ts if t.startswith("labutils.metrics")]  # fmt: skip
    assert not bad, bad


def test_one_prometheus_text_parser() -> None:
    users = [m for m, p in MODULES.items() if "text_string_to_metric_families" in p.read_text()]
    assert users == ["labutils.metrics.parse"], users


@pytest.mark.skipif(
    not Path(sys.executable).with_name("mypy").exists(), reason="mypy not installed"
)
def test_mypy_checks_both_backends_against_the_protocol(tmp_path: Path) -> None:
    """A backend whose method no longer matches the protocol fails the type check."""
    copy = tmp_path / "labutils"
    subprocess.run(["cp", "-r", str(PACKAGE), str(copy)], check=True)
    backend = copy / "targets" / "twin" / "backend.py"
    text = backend.read_text()
    wrong = text.replace("def scale(self, lws: str, replicas: int) -> None:",
                         "def scale(self, lws: str, replicas: str) -> None:")  # fmt: skip
    assert wrong != text, "TwinBackend.scale's signature changed; update this test"
    backend.write_text(wrong)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mypy")), "--no-incremental", "--follow-imports=silent",
         "--ignore-missing-imports", str(copy / "targets" / "__init__.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "TwinBackend" in done.stdout and "Backend" in done.stdout, done.stdout


def test_readme_module_map_lists_every_module() -> None:
    """Each module is named in the README's map: its path, or its file in its folder's row."""
    readme = (PACKAGE.parent / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "labutils/" in line]

    def named(rel: Path) -> bool:
        if f"`{rel}`" in readme:
            return True
        folder = f"`{rel.parent}/`"  # the file in its own folder's row
        if any(folder in row and (rel.name == "__init__.py" or f"`{rel.name}`" in row)
               for row in rows):  # fmt: skip
            return True
        parts = rel.parts  # ("labutils", folder, ..., file)
        if len(parts) == 2:
            return rel.name == "__init__.py"
        top = f"`{parts[0]}/{parts[1]}/`"
        inner = parts[2:]
        if inner[-1] == "__init__.py":
            inner = inner[:-1]
            tokens = [f"`{'/'.join(inner)}/`"] if inner else []
        elif len(inner) == 1:
            tokens = [f"`{inner[0]}`"]
        else:  # a sub-folder: "`rules/`" and "`lws.py`", or "`vllm_plugins/lab_headers.py`"
            tokens = [f"`{inner[-2]}/`", f"`{inner[-1]}`"]
            if any(f"`{'/'.join(inner)}`" in row for row in rows):
                return True
        return any(top in row and all(tok in row for tok in tokens) for row in rows)

    missing = [str(p.relative_to(PACKAGE.parent)) for p in MODULES.values()
               if not named(p.relative_to(PACKAGE.parent))]  # fmt: skip
    assert not missing, f"add to the README's module map: {missing}"
