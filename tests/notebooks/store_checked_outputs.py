"""Store the outputs nbval compares: run a notebook, keep outputs only on tagged cells.

nbval (run with ``--nbval-lax`` by ``make test``) compares a cell's outputs with the stored ones
only when the cell carries the ``nbval-check-output`` tag (cell metadata ``tags``); every other
cell just has to run. After a change that legitimately alters a tagged cell's output (e.g. a
manifest in ``manifests/``), refresh the stored outputs with::

    LAB_PROGRESS=0 .venv/bin/python tests/notebooks/store_checked_outputs.py notebooks/01-*.ipynb

It executes the notebook against the local twin (like nbval), writes the tagged cells' outputs
into the file and clears all other outputs, so the repository holds only what is checked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TAG = "nbval-check-output"


def store(path: Path) -> int:
    """Execute ``path`` and store the outputs of its tagged cells; returns how many."""
    executed = nbformat.read(path, as_version=4)
    NotebookClient(
        executed, timeout=600, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    ).execute()
    source = json.loads(path.read_text())
    stored = 0
    for cell, ran in zip(source["cells"], executed.cells, strict=True):
        if cell["cell_type"] != "code":
            continue
        if TAG in cell.get("metadata", {}).get("tags", []):
            cell["outputs"] = json.loads(json.dumps(ran.outputs))
            cell["execution_count"] = ran.execution_count
            stored += 1
        else:
            cell["outputs"], cell["execution_count"] = [], None
    path.write_text(json.dumps(source, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return stored


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: store_checked_outputs.py NOTEBOOK.ipynb [...]")
    for name in sys.argv[1:]:
        print(f"{name}: stored the outputs of {store(Path(name))} tagged cells")
