"""environment.yml (conda) describes the same environment as pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _env() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def _pip_section(env: dict) -> list[str]:
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip: section"
    return [str(x) for x in sections[0]]


def _normalised(reqs: list[str]) -> dict[str, SpecifierSet]:
    out = {}
    for text in reqs:
        req = Requirement(text)
        out[req.name.lower().replace("_", "-")] = req.specifier
    return out


def test_environment_pip_list_equals_pyproject_runtime_plus_dev() -> None:
    project = _pyproject()["project"]
    wanted = _normalised(project["dependencies"] + project["optional-dependencies"]["dev"])
    pip = [r for r in _pip_section(_env()) if not r.startswith("-e")]
    got = _normalised(pip)
    assert set(got) == set(wanted), (
        f"only in environment.yml: {sorted(set(got) - set(wanted))}; "
        f"only in pyproject.toml: {sorted(set(wanted) - set(got))}"
    )
    for name, spec in wanted.items():
        assert got[name] == spec, f"{name}: environment.yml {got[name]} != pyproject {spec}"


def test_environment_installs_the_lab_editable_with_dev_extra() -> None:
    assert "-e .[dev]" in _pip_section(_env())


def test_environment_python_satisfies_requires_python() -> None:
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    pythons = [
        d.split("=", 1)[1]
        for d in _env()["dependencies"]
        if isinstance(d, str) and d.startswith("python=")
    ]
    assert pythons, "environment.yml must pin python"
    assert requires.contains(pythons[0] + ".0"), f"python {pythons[0]} vs {requires}"
