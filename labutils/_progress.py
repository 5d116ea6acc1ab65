"""Progress bars for poll loops that redraw only when something changed."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["show_progress"]


def show_progress(bar: Any, n: int, total: int | None = None, *, every_s: float = 5.0) -> None:
    """Move a tqdm ``bar`` to ``n`` (of ``total``); redraw on a change or every ``every_s``.

    A poll loop that redraws on every poll writes one line per poll into logs that are not a
    terminal (CI, papermill, ``make run``); redrawing on change keeps them to one line per
    step, and the periodic redraw still moves the elapsed time on a long wait.
    """
    now = time.monotonic()
    changed = bar.n != n or (total is not None and bar.total != total)
    if total is not None:
        bar.total = total
    bar.n = n
    if changed or now - getattr(bar, "_lab_drawn_s", now) >= every_s:
        bar.refresh()
        bar._lab_drawn_s = now
    elif not hasattr(bar, "_lab_drawn_s"):
        bar._lab_drawn_s = now
