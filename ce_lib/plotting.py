"""One place for the look of the course's figures.

Matplotlib is imported only when this module is used, so :mod:`ce_lib`
itself needs nothing but NumPy.
"""

from __future__ import annotations

BOOK_STYLE = {
    # An opaque white background, so that figures stay readable on the
    # site's dark theme (a transparent PNG would show black text on black).
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "figure.dpi": 100,
    "figure.figsize": (6.4, 3.6),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "legend.frameon": False,
}


def use_book_style() -> None:
    """Apply the course's figure style to matplotlib's global settings."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(BOOK_STYLE)
