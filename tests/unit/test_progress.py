"""Poll-loop progress bars redraw on change, not on every poll."""

from __future__ import annotations

import io

from tqdm import tqdm

from labutils._progress import show_progress


def test_bar_redraws_only_when_the_count_or_total_changes() -> None:
    out = io.StringIO()  # not a terminal: every redraw is a new chunk of the log
    with tqdm(total=1, desc="groups ready", file=out, mininterval=0) as bar:
        drawn = out.getvalue().count("groups ready")
        for _ in range(50):  # 50 polls, nothing ready yet
            show_progress(bar, 0, 6)
        after_polls = out.getvalue().count("groups ready")
        assert after_polls - drawn == 1  # the total changed once (1 -> 6)
        show_progress(bar, 5, 6)
        show_progress(bar, 5, 6)
        assert out.getvalue().count("groups ready") - after_polls == 1
        assert (bar.n, bar.total) == (5, 6)


def test_bar_still_moves_the_clock_on_a_long_wait() -> None:
    out = io.StringIO()
    with tqdm(total=3, desc="waiting", file=out, mininterval=0) as bar:
        show_progress(bar, 0, every_s=0.0)
        before = out.getvalue().count("waiting")
        show_progress(bar, 0, every_s=0.0)  # no change, but the redraw period has passed
        assert out.getvalue().count("waiting") == before + 1
