"""Tables and figures for reports: one markdown-table builder, one number formatter, one way to draw and
save a matplotlib figure.

matplotlib is imported only when a figure is drawn, with the non-interactive ``Agg`` backend (no display
needed), so importing this module costs nothing. Used by ``bfpo report``, ``bfpo judge``, the experiments
and the benchmark scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

#: What a table cell shows for a value that was not measured.
MISSING = "–"

_RULES = {"l": "---", "r": "---:", "c": ":---:"}


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    """A GitHub markdown table (no trailing newline).

    ``align`` has one letter per column, ``l`` (left), ``r`` (right) or ``c`` (centre); the default is the
    first column left and the others right (a label, then numbers). Cells are written with ``str``; a row
    with another number of cells than the header is a ValueError.
    """
    header = [str(h) for h in header]
    align = align if align is not None else "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - set(_RULES):
        raise ValueError(f"align {align!r}: expected one of l/r/c per column ({len(header)} columns)")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(_RULES[a] for a in align) + "|"]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {i} has {len(row)} cells for {len(header)} columns: {list(row)!r}")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def fmt_rate(x: Optional[float], digits: int = 2, missing: str = MISSING) -> str:
    """``x`` with ``digits`` decimals, or ``missing`` for None (a rate or percentage not measured)."""
    return missing if x is None else f"{x:.{digits}f}"


def subplots(nrows: int = 1, ncols: int = 1, **kwargs) -> Tuple[Any, Any]:
    """``matplotlib.pyplot.subplots`` on the Agg backend (imported here, on first use). Pass
    ``squeeze=False`` to always get a 2-D array of axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Any, path: Path | str, dpi: int = 120, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (its folder is created; the format follows the suffix), close it and
    return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    try:
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def bar_chart(
    ax: Any,
    categories: Sequence[str],
    series: Dict[str, Sequence[float]],
    *,
    stacked: bool = False,
    colors: Optional[Dict[str, str]] = None,
    annotate: Optional[str] = None,
    width: float = 0.8,
) -> None:
    """Bars on ``ax``: one group per category, one bar per series (side by side, or stacked bottom to top).

    ``series`` maps a legend label to one value per category; ``colors`` maps labels to colours;
    ``annotate`` is a format such as ``"{:.0f}"`` written above each bar (not for stacked bars). Draws the
    legend and the category ticks; titles and limits are the caller's.
    """
    n = len(series)
    xs = list(range(len(categories)))
    bottom = [0.0] * len(categories)
    step = width if stacked else width / max(n, 1)
    for k, (label, values) in enumerate(series.items()):
        values = [float(v) for v in values]
        if len(values) != len(categories):
            raise ValueError(f"series {label!r} has {len(values)} values for {len(categories)} categories")
        color = (colors or {}).get(label)
        if stacked:
            bars = ax.bar(xs, values, step, bottom=bottom, label=label, color=color)
            bottom = [b + v for b, v in zip(bottom, values)]
        else:
            offset = (k - (n - 1) / 2) * step
            bars = ax.bar([x + offset for x in xs], values, step, label=label, color=color)
            if annotate:
                for bar in bars:
                    ax.annotate(
                        annotate.format(bar.get_height()),
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
    ax.set_xticks(xs)
    ax.set_xticklabels(list(categories))
    ax.legend(fontsize=8)
