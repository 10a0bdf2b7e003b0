"""Does training reach the objective's optimum? Per-case margins against their targets, over the steps.

The BFPO loss (Eq. 15) regresses ``h`` onto ``g_I / tau``; the trainer logs ``margins/<case>`` = the mean
of ``tau * h`` over the pairs of each Figure-3 case in a logging window (``metrics.jsonl``), so its target
is the case's label ``g_I`` itself (``BFPOConfig.case_labels()``; with alpha = 0.5: safe_unsafe +1,
safe_safe +0.5, unsafe_unsafe -0.5, unsafe_safe -1). A run whose margins are still far from their targets
when it stops has not trained toward the optimum, whatever its loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from bfpo.figures import save_figure, subplots
from bfpo.objective import CASES as _CASES

#: the Figure-3 case names, in order: safe_unsafe, safe_safe, unsafe_unsafe, unsafe_safe
CASES = tuple(name for name, _ in _CASES)


def case_margins(log_history: Iterable[Mapping]) -> Dict[str, List[Tuple[int, float]]]:
    """``{case: [(step, mean tau*h), ...]}`` for every case logged at least once, in step order."""
    out: Dict[str, List[Tuple[int, float]]] = {}
    for row in log_history:
        for case in CASES:
            key = f"margins/{case}"
            if key in row and "step" in row:
                out.setdefault(case, []).append((int(row["step"]), float(row[key])))
    return {case: sorted(points) for case, points in out.items()}


def distance_to_targets(log_history: Iterable[Mapping], targets: Mapping[str, float]) -> Dict[str, Dict[str, float]]:
    """Per case: the target, the first and last logged margins, and how much of the way from the first
    toward the target the last one has come (``progress`` 1 = reached, 0 = no move, < 0 = moved away)."""
    out: Dict[str, Dict[str, float]] = {}
    for case, points in case_margins(log_history).items():
        if case not in targets:
            continue
        first, last, target = points[0][1], points[-1][1], float(targets[case])
        gap = target - first
        out[case] = {
            "target": target,
            "first": first,
            "last": last,
            "progress": (last - first) / gap if abs(gap) > 1e-12 else 1.0,
        }
    return out


def plot_margins(
    log_history: Iterable[Mapping], targets: Mapping[str, float], path: Path | str, title: Optional[str] = None
) -> Path:
    """One line per case (its logged tau*h) and a dashed line at its target ``g_I``; written to ``path``."""
    curves = case_margins(log_history)
    fig, ax = subplots(figsize=(6.4, 4.0))
    for case in (c for c in CASES if c in curves):
        steps, values = zip(*curves[case])
        (line,) = ax.plot(
            steps, values, marker="o", ms=3, label=f"{case} (target {targets.get(case, float('nan')):+g})"
        )
        if case in targets:
            ax.axhline(targets[case], color=line.get_color(), ls="--", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("tau * h (mean over the case's pairs)")
    ax.set_title(title or "per-case margins (solid) and their targets g_I (dashed)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
