"""Session 10: choose between two demo recipes on VALIDATION prompts only.

Reads each run's per-seed ``results.json`` (``bfpo demo --seeds ... --output_dir RUN``) and prints, per seed,
the validation point the checkpoint selection chose for BFPO (harmful answered % / benign refused % on the
48 + 112 validation prompts), whether it was admissible, and the mean over the seeds. Nothing here reads an
evaluation set. Rule: the recipe whose chosen points are admissible in more seeds wins; then the lower mean
harmful compliance at the chosen points.

Usage: python s10_choose_recipe.py RUN_A RUN_B [...]
"""

import json
import sys
from pathlib import Path


def chosen_points(run: Path):
    for res in sorted(run.glob("seed_*/results.json")):
        sel = json.loads(res.read_text())["selection"]
        point = next(p for p in sel["points"] if p["step"] == sel["chosen_step"])
        yield res.parent.name, point, bool(sel.get("admissible"))


for arg in sys.argv[1:]:
    rows = list(chosen_points(Path(arg)))
    if not rows:
        sys.exit(f"{arg}: no seed_*/results.json")
    print(arg)
    for seed, p, ok in rows:
        print(
            f"  {seed}: step {p['step']:>2}  {p['harmful_compliance']:5.1f} / {p['benign_refusal']:4.1f}  admissible={ok}"
        )
    mean_h = sum(p["harmful_compliance"] for _, p, _ in rows) / len(rows)
    mean_b = sum(p["benign_refusal"] for _, p, _ in rows) / len(rows)
    n_ok = sum(ok for *_, ok in rows)
    print(f"  mean: {mean_h:.1f} / {mean_b:.1f}; admissible in {n_ok} of {len(rows)} seeds")
