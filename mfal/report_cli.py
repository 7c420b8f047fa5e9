"""Command-line faces of campaign reports: ``mfal report`` and the text chart of ``mfal history --plot``.

This module stays light (no matplotlib, torch or mace at import) because the
``mfal`` command imports it at start-up; :mod:`mfal.report` is imported only
when a report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

PLOT_WIDTH = 40
"""Columns of the barrier axis in :func:`history_plot`."""


def report(
    campaign: str = typer.Argument(..., help="Campaign name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: ./report-CAMPAIGN)."),
    launchpad: Optional[Path] = typer.Option(
        None, "--launchpad", "-l", help="FireWorks launchpad file naming the database (default: as for 'mfal history')."
    ),
) -> None:
    """Figures (NEB profiles, barrier history, parity, force deviation) and one self-contained HTML page."""
    from mfal.cli import console, open_store
    from mfal.report import FIGURES, write_report

    folder = out or Path(f"report-{campaign}")
    page = write_report(open_store(launchpad), campaign, folder)
    console.print(f"wrote {page} and {', '.join(f'{stem}.png' for stem in FIGURES)} in {folder}")


def history_plot(rows: list[dict], width: int = PLOT_WIDTH) -> str:
    """Barrier ± committee spread per cycle as a text error-bar chart (rows of :meth:`Store.history`).

    Every row shares one axis from the lowest barrier − spread to the highest
    barrier + spread, so a glance shows the barrier settling and the spread
    shrinking. Plain text without markup: print it with ``print`` (or rich with
    ``markup=False``).
    """
    explored = [row for row in rows if row.get("barrier") is not None]
    if not explored:
        return "no cycle has a barrier yet"
    low = min(row["barrier"] - _spread(row) for row in explored)
    high = max(row["barrier"] + _spread(row) for row in explored)
    if high - low < 1e-9:
        low, high = low - 0.5e-3, high + 0.5e-3
    scale = f"{low:.3f} eV".ljust(width - 9) + f"{high:.3f} eV".rjust(9)
    lines = [f"{'cycle':>5}  {'labels':>6}  {'barrier ± spread (eV)':<21}  {scale}"]
    for row in rows:
        prefix = f"{row['cycle']:>5}  {row.get('n_labels', 0):>6}  "
        if row.get("barrier") is None:
            lines.append(prefix + "not explored yet")
            continue
        bar = _error_bar(row["barrier"], _spread(row), low, high, width)
        lines.append(prefix + f"{row['barrier']:.4f} ± {_spread(row):.4f}".ljust(21) + "  " + bar)
    return "\n".join(lines)


def _spread(row: dict) -> float:
    return row.get("barrier_spread") or 0.0


def _error_bar(value: float, spread: float, low: float, high: float, width: int) -> str:
    """``├──●──┤`` from value − spread to value + spread on a ``width``-column axis from low to high."""
    left, right, centre = (int(round((x - low) / (high - low) * (width - 1))) for x in
                           (value - spread, value + spread, value))
    bar = [" "] * width
    bar[left : right + 1] = "─" * (right - left + 1)
    if right > left:
        bar[left], bar[right] = "├", "┤"
    bar[centre] = "●"
    return "".join(bar).rstrip()
