"""Project files never point at the reference folder beside the checkout (a clone has none)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_tracked_file_mentions_the_shared_folder() -> None:
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    needle = "../" + "shared"  # split so this file does not match itself
    hits = []
    for name in filter(None, files):
        path = REPO / name
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        marks = (needle, "shared/" + "reference", "shared/" + "fixtures")
        hits += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1)
                 if any(m in line for m in marks)]  # fmt: skip
    assert not hits, "cite the public source instead: " + ", ".join(hits)
