"""Notebook 05's lesson checks: the cost computed in the notebook agrees with the package's.

The notebook computes each layout's knee and its USD per million output tokens by hand, in a
cell, from the sweep frame; :func:`check_knee_costs` holds those numbers against
:func:`labutils.sizing.knee_points` (via the recommendation), so the formula a participant reads
is the one the ranking used.
"""

from __future__ import annotations

import math

import pandas as pd

from labutils.errors import ValidationError
from labutils.sizing import Recommendation

__all__ = ["check_knee_costs"]


def check_knee_costs(by_hand: pd.DataFrame, rec: Recommendation) -> pd.DataFrame:
    """Compare the notebook's knee table (``layout``, ``rate_rps``, ``cost_per_mtok``) with the
    recommendation's (one row per layout meeting the SLO).

    Returns:
        One row per layout: both knees and both costs, and whether they agree.

    Raises:
        ValidationError: a layout's knee or cost differs, or a layout is in one table only.
    """
    package = rec.to_frame()
    package = package[package["meets_slo"]].set_index("layout")
    mine = by_hand.set_index("layout")
    rows = []
    for layout in sorted(set(package.index) | set(mine.index)):
        ours = mine.loc[layout] if layout in mine.index else None
        theirs = package.loc[layout] if layout in package.index else None
        rate_hand = float(ours["rate_rps"]) if ours is not None else math.nan
        rate_pkg = float(theirs["rate_rps"]) if theirs is not None else math.nan
        cost_hand = float(ours["cost_per_mtok"]) if ours is not None else math.nan
        cost_pkg = float(theirs["usd_per_mtok"]) if theirs is not None else math.nan
        agree = math.isclose(rate_hand, rate_pkg, rel_tol=1e-9) and math.isclose(
            cost_hand, cost_pkg, rel_tol=1e-9
        )
        rows.append(
            {
                "layout": layout,
                "knee_rps_by_hand": rate_hand,
                "knee_rps_sizing": rate_pkg,
                "usd_per_mtok_by_hand": cost_hand,
                "usd_per_mtok_sizing": cost_pkg,
                "agree": agree,
            }
        )
    table = pd.DataFrame(rows)
    bad = table[~table["agree"]]
    if not bad.empty:
        problems = [
            f"{r.layout}: by hand {r.knee_rps_by_hand:.2f} req/s ${r.usd_per_mtok_by_hand:.4f}, "
            f"sizing {r.knee_rps_sizing:.2f} req/s ${r.usd_per_mtok_sizing:.4f} per Mtok"
            for r in bad.itertuples()
        ]
        raise ValidationError(
            f"the notebook's knee costs differ from sizing.recommend ({len(problems)} "
            f"layout(s)): {problems[0]}",
            problems,
        )
    return table
