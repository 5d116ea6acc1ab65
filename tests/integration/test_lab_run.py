"""``labctl lab run``'s executor: parameters injected, Unix-socket kernels, one HTML report."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from labutils.errors import LabError
from labutils.lab import run_lab


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell('target = "unset"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)
    return path


def _stdout(nb_path: Path, cell: int) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    return "".join(o.get("text", "") for o in nb.cells[cell].outputs if o.output_type == "stream")


def test_run_injects_the_target_uses_unix_socket_kernels_and_writes_a_report(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    source = _notebook(
        tmp_path / "01-probe.ipynb",
        "print(target)",
        "from ipykernel.kernelapp import IPKernelApp\nprint(IPKernelApp.instance().transport)",
    )
    result = run_lab(tmp_path / "out", target="local", notebooks=[source])
    (executed,) = result.executed
    # cell 1 is papermill's injected parameters cell
    assert _stdout(executed, 2).strip() == "local"
    assert _stdout(executed, 3).strip() == "ipc"  # no unencrypted loopback TCP ports
    assert "running over TCP" not in capfd.readouterr().err
    assert "01-probe.ipynb" in result.report.read_text()


def test_a_failing_cell_names_the_notebook_and_the_executed_copy(tmp_path: Path) -> None:
    source = _notebook(tmp_path / "02-broken.ipynb", "raise ValueError('lesson check failed')")
    with pytest.raises(LabError, match=r"02-broken.ipynb: cell \d+ failed with ValueError"):
        run_lab(tmp_path / "out", target="local", notebooks=[source])
    assert (tmp_path / "out" / "02-broken.ipynb").exists()
