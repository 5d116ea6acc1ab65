"""`labctl validate` reports malformed objects as problems and never crashes on them.

Seeded random mutations: one field of one rendered object replaced by a value of the wrong
shape (null, string, number, list, mapping, bool). Whatever the result, the CLI must answer
with an exit status and one-line problems, not a traceback.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labutils.cli import main
from labutils.manifests import render

_VALUES: list[Any] = [None, "x", 5, [], {}, [1], {"a": 1}, True]


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render(out_dir=out)
    return out


@pytest.mark.parametrize("seed", range(24))
def test_wrong_shapes_never_crash_validate(
    seed: int, rendered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    root = tmp_path / "m"
    shutil.copytree(rendered, root)
    files = sorted(root.rglob("*.yaml"))
    target = rng.choice(files)
    docs = list(yaml.safe_load_all(target.read_text()))
    doc = rng.randrange(len(docs))
    path = rng.choice(list(_paths(docs[doc]))[1:])
    value = rng.choice(_VALUES)
    parent = docs[doc]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    target.write_text(yaml.safe_dump_all(docs))

    status = main(["validate", str(root)])

    err = capsys.readouterr().err
    assert status in (0, 1), err
    assert "Traceback" not in err
    for line in err.splitlines()[:-1]:
        assert line.startswith(str(root)), line  # every problem names its file
