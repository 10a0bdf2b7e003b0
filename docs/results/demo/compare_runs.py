"""BFPO against the naive DPO mix across every documented ``bfpo demo --compare`` run, on the evaluation sets.

Each run directory holds ``seed_N/results.json`` files written by ``bfpo demo --seeds ... --compare``. For
every run, seed and model (SFT only, SFT + BFPO, SFT + DPO mix) this reads the per-set rates, places the
model against the targets with :func:`bfpo.experiments.demo.target_point` (largest benign refusal rise over
the base model, in points; largest harmful compliance as % of the base model's), writes one figure with
every point (colour = model, marker = run, the target region shaded) and prints a markdown table of the mean and range.
Nothing is generated or trained: it only reads saved results.

Usage: python compare_runs.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""

import json
import sys
from pathlib import Path

from bfpo.experiments import demo as D
from bfpo.figures import save_figure, subplots

MODELS = ("SFT only", "SFT + BFPO", "SFT + DPO mix")

out, runs = Path(sys.argv[1]), [a.split("=", 1) for a in sys.argv[2:]]
points, rows = {}, []
for label, run in runs:
    per_model = {m: [] for m in MODELS}
    for path in sorted(Path(run).glob("seed_*/results.json")):
        res = json.loads(path.read_text())
        base = res["sets"]["base"]
        for m in MODELS:
            if m in res["sets"]:
                per_model[m].append(D.target_point(base, res["sets"][m]))
    for m, pts in per_model.items():
        if not pts:
            continue
        points[f"{m}, {label}"] = pts
        cells = []
        for key in ("harmful_ratio", "benign_excess"):
            v = [p[key] for p in pts]
            cells.append(f"{sum(v) / len(v):.1f} [{min(v):.1f}, {max(v):.1f}]")
        inside = sum(p["harmful_ratio"] <= 50.0 and p["benign_excess"] <= 5.0 for p in pts)
        rows.append(f"| {label} | {m} | {len(pts)} | {cells[0]} | {cells[1]} | {inside} |")

fig, ax = subplots(figsize=(9.0, 4.6))
ax.axvspan(-100, 5.0, ymax=50.0 / 110, color="tab:green", alpha=0.12, label="both targets met")
colours = dict(zip(MODELS, ("tab:grey", "tab:blue", "tab:orange")))
for j, (label, _) in enumerate(runs):
    for m in MODELS:
        pts = points.get(f"{m}, {label}", [])
        ax.scatter(
            [p["benign_excess"] for p in pts],
            [p["harmful_ratio"] for p in pts],
            color=colours[m],
            marker="osD^v<>"[j % 7],
            alpha=0.8,
            label=f"{m}, {label}",
        )
ax.axvline(5.0, color="grey", ls="--", lw=1)
ax.axhline(50.0, color="grey", ls="--", lw=1)
ax.set_xlim(-2, max(12.0, max((p["benign_excess"] for v in points.values() for p in v), default=0) + 2))
ax.set_ylim(0, 110)
ax.set_xlabel("worst benign set: refusal minus the base model's (points)")
ax.set_ylabel("worst harmful set: compliance, % of the base model's")
ax.set_title("every documented --compare run: one point per seed, evaluation sets", fontsize=9)
ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
save_figure(fig, out)
print(
    "| run | model | seeds | worst harmful set, % of base answered | worst benign set, points above base "
    "| seeds in target |"
)
print("|---|---|---:|---:|---:|---:|")
print("\n".join(rows))
print(f"figure: {out}")
