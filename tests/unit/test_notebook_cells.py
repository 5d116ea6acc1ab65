"""Each notebook shows its mechanism in code a participant can read: not only labutils calls."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def _labutils_names(cells: list[str]) -> set[str]:
    names: set[str] = set()
    for source in cells:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # IPython magics
            tree = ast.parse("\n".join(ln for ln in source.splitlines() if not ln.startswith("%")))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labutils"):
                names |= {a.asname or a.name for a in node.names}
    return names


def _is_one_labutils_call(source: str, names: set[str]) -> bool:
    code = "\n".join(ln for ln in source.splitlines() if not ln.startswith("%"))
    body = ast.parse(code).body
    if len(body) != 1:
        return False
    node = body[0]
    value = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_cells_that_compute_its_mechanism(path: Path) -> None:
    cells = json.loads(path.read_text())["cells"]
    code = [
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code"
        and "parameters" not in c.get("metadata", {}).get("tags", [])
        and "".join(c["source"]).strip()
    ]
    names = _labutils_names(code)
    teaching = [
        s for s in code
        if not s.lstrip().startswith("# Lesson check")
        and "import " not in s.split("\n", 1)[0]
        and not _is_one_labutils_call(s, names)
    ]  # fmt: skip
    assert len(teaching) >= 2, f"{path.name}: only {len(teaching)} cells beyond labutils calls"
    assert any(s.lstrip().startswith("# Lesson check") for s in code), (
        f"{path.name}: no '# Lesson check' cell"
    )
