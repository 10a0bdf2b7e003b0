"""The evaluation curves of a ``bfpo demo --seeds ... --compare --curve_every N`` run, one table for docs.

For each seed and method: every scored step's place against the targets on the evaluation sets (worst
harmful set's compliance as % of the base model's / worst benign set's refusal rise in points), its
validation point (harmful answered % / benign refused %), the step the run's selection chose, and the step
that the selection rule of the current ``bfpo.eval.selection.choose`` picks from the same validation points.
Nothing is generated or trained: it only reads ``seed_N/results.json``.

Usage: python curve_table.py RUN_DIR
"""

import json
import sys
from pathlib import Path

from bfpo.eval.selection import SelectionPoint, choose
from bfpo.experiments.demo import in_target

run = Path(sys.argv[1])
print(
    "| seed | method | per step: evaluation (worst harmful % of base / worst benign +pts); validation "
    "(harmful answered / benign refused) | chosen in the run | current rule |"
)
print("|---|---|---|---:|---:|")
for path in sorted(run.glob("seed_*/results.json")):
    res = json.loads(path.read_text())
    seed = res["settings"]["seed"]
    histories = {
        "SFT + BFPO": res["selection"],
        **{
            label: res["compare"][key]["selection"]
            for key, label in (("mix", "SFT + DPO mix"),)
            if key in res["compare"]
        },
    }
    for label, c in res["curve"].items():
        sel = histories[label]
        val = {p["step"]: p for p in sel["points"]}
        cells = []
        for p in c["points"]:
            v = val.get(p["step"])
            cell = f"{p['step']}: {p['harmful_ratio']:.1f}/{p['benign_excess']:+.1f}{' (in)' if in_target(p) else ''}"
            if v:
                cell += f" [{v['harmful_compliance']:.1f}/{v['benign_refusal']:.1f}]"
            cells.append(cell)
        ref = SelectionPoint(**sel["reference"])
        now = choose([SelectionPoint(**p) for p in sel["points"]], res["settings"]["max_benign_increase"], ref)
        print(f"| {seed} | {label} | {'; '.join(cells)} | {c['chosen_step']} | {now.step} |")
