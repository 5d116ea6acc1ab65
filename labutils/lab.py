"""Run the whole lab headless: execute every notebook in order and write one HTML report.

``labctl lab run --out reports`` is the lab's main job (the README's first command). Each
notebook stands alone (it prepares what it needs and cleans up), so they run one after another
in a fresh kernel each; executed copies and ``report.html`` (all plots embedded) land in
``--out``. A notebook that fails stops the run with its name and the failing cell.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from labutils.config import lab_files_root, lab_target
from labutils.errors import ConfigError, LabError

__all__ = [
    "LabRunResult",
    "list_notebooks",
    "run_lab",
]


@dataclass(frozen=True)
class LabRunResult:
    """What one headless run produced."""

    executed: tuple[Path, ...]
    report: Path
    durations_s: tuple[float, ...]

    def to_frame(self) -> Any:
        """One row per executed notebook with its run time."""
        import pandas as pd

        return pd.DataFrame(
            {"notebook": [p.name for p in self.executed], "duration_s": self.durations_s}
        )


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The lab's notebooks in teaching order (file names start with a two-digit number)."""
    nb_dir = folder or lab_files_root() / "notebooks"
    found = sorted(p for p in nb_dir.glob("[0-9][0-9]*.ipynb") if p.is_file())
    if not found:
        raise ConfigError(f"{nb_dir}: no notebooks named NN-*.ipynb found")
    return found


def _resolve_notebook(path: Path) -> Path:
    # A bare name ("01-x.ipynb") means the lab's own notebook of that name.
    for cand in (Path(path), lab_files_root() / "notebooks" / Path(path).name):
        if cand.is_file():
            return cand
    names = ", ".join(p.name for p in list_notebooks())
    raise ConfigError(f"notebook {path} not found; choose one of: {names}")


def _combined_report(executed: list[Path], report: Path) -> None:
    from nbconvert import HTMLExporter

    combined = nbformat.v4.new_notebook()
    combined.metadata = nbformat.read(executed[0], as_version=4).metadata
    for index, path in enumerate(executed):
        nb = nbformat.read(path, as_version=4)
        combined.cells.append(nbformat.v4.new_markdown_cell(f"---\n# Notebook `{path.name}`"))
        for cell in nb.cells:
            # Cell ids are unique per notebook only; prefix them so the report stays valid.
            cell["id"] = f"nb{index:02d}-{cell.get('id', len(combined.cells))}"
            combined.cells.append(cell)
    body, _ = HTMLExporter().from_notebook_node(combined)
    report.write_text(body)


def _ipc_kernel_manager() -> type:
    """A kernel manager whose kernels talk over Unix sockets in Jupyter's private runtime dir.

    With the default TCP transport every kernel listens unencrypted on loopback ports (and
    ipykernel warns so into the lab's output); papermill's headless kernels need no TCP.
    """
    from jupyter_client.manager import AsyncKernelManager

    class _IpcKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            super().__init__(**kwargs)

    return _IpcKernelManager


def run_lab(
    out_dir: Path | str = "reports",
    *,
    target: str | None = None,
    notebooks: list[Path] | None = None,
    parameters: dict[str, Any] | None = None,
    timeout_s: float = 900.0,
) -> LabRunResult:
    """Execute the notebooks with papermill into ``out_dir`` and write ``report.html``.

    Args:
        out_dir: where executed notebooks and the report go (created if missing).
        target: ``local`` or ``eks`` (default ``$LAB_TARGET``), passed as the ``target``
            parameter of every notebook.
        notebooks: a subset to run (default: all, in order).
        parameters: extra papermill parameters for every notebook.
        timeout_s: per-cell execution timeout.

    Raises:
        LabError: a notebook failed; the message names it and points at the executed copy.
    """
    import papermill

    # Kernels inherit this environment: no progress-bar redraws in the executed notebooks.
    os.environ["LAB_PROGRESS"] = "0"
    chosen = lab_target(target)
    out = Path(out_dir)
    paths = [_resolve_notebook(p) for p in notebooks] if notebooks else list_notebooks()
    out.mkdir(parents=True, exist_ok=True)
    params = {"target": chosen, **(parameters or {})}
    executed: list[Path] = []
    durations: list[float] = []
    for path in paths:
        dest = out / path.name
        start = time.monotonic()
        try:
            papermill.execute_notebook(
                str(path),
                str(dest),
                parameters=params,
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=int(timeout_s),
                kernel_manager_class=_ipc_kernel_manager(),
            )
        except papermill.PapermillExecutionError as exc:
            raise LabError(
                f"{path.name}: cell {exc.exec_count} failed with {exc.ename}: {exc.evalue} "
                f"(executed copy: {dest})"
            ) from None
        durations.append(time.monotonic() - start)
        executed.append(dest)
        print(f"lab: {path.name} ran in {durations[-1]:.1f} s -> {dest}", flush=True)
    report = out / "report.html"
    _combined_report(executed, report)
    print(f"lab: report with every notebook's output: {report}", flush=True)
    return LabRunResult(tuple(executed), report, tuple(durations))
