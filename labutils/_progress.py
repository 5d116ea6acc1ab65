"""Progress bars: one factory for every long wait, and redraws only when something changed.

Bars are for a person watching a wait. Executed notebooks, the HTML report and CI logs keep
what a bar printed, one chunk per redraw, so ``LAB_PROGRESS=0`` (set by ``labctl lab run`` and
the test suite) turns every bar off; the results a wait returns are unchanged.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, cast

with warnings.catch_warnings():
    # Without ipywidgets tqdm.auto warns once (TqdmWarning) and falls back to text bars, which
    # render fine; importing it here, once, keeps that warning out of every notebook.
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled", "show_progress"]


def progress_enabled() -> bool:
    """False when ``LAB_PROGRESS`` is ``0``/``false``/``off`` (headless runs and tests)."""
    return os.environ.get("LAB_PROGRESS", "1").strip().lower() not in ("0", "false", "off", "no")


def progress_bar(*args: Any, disable: bool = False, **kwargs: Any) -> Any:
    """A ``tqdm.auto`` bar (``leave=False`` by default), off when :func:`progress_enabled` is
    False or ``disable`` is set."""
    kwargs.setdefault("leave", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cast(Any, tqdm)(*args, disable=disable or not progress_enabled(), **kwargs)


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
