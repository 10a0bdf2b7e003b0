"""Session 9, validation only: does a smaller BFPO step (lower learning rate, more steps, or more pairs per
step) make the BFPO stage's validation walk less noisy than the default (lr 1e-4, 16 steps of 8 pairs)?

Runs the demo's own stages for each seed (self-sampled prompts, red teaming, SFT, on-policy pairs), then
several BFPO variants from the same SFT model and pairs, each with checkpoint selection on the validation
prompts. It never generates on an evaluation set. Prints one JSON line per validation point and chosen step.

Usage: python s9_bfpo_steps.py OUT_DIR SEED [SEED ...]
"""

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from bfpo.experiments import demo as D
from bfpo.models.smollm import smollm2_dir

VARIANTS = {
    "default": {},
    "lr3e-5_x32": {"learning_rate": 3e-5, "max_steps": 32},
    "lr5e-5_b16": {"learning_rate": 5e-5, "batch_size": 16},
}

out, seeds = Path(sys.argv[1]), [int(a) for a in sys.argv[2:]]
out.mkdir(parents=True, exist_ok=True)
base = smollm2_dir()
s0 = D.DemoSettings()
prompts0 = D.demo_prompts(s0)
eval_texts = [r["prompt"] for rows in prompts0["eval"].values() for r in rows]
sp_file = out / "self_prompts.json"
if not sp_file.exists():
    sp_file.write_text(json.dumps(D.sample_self_prompts(str(base), s0, eval_texts, progress=False)))
self_rows = json.loads(sp_file.read_text())


def emit(**row):
    print(json.dumps(row), flush=True)
    with open(out / "runs.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


for seed in seeds:
    s = replace(s0, seed=seed)
    prompts = D.with_self_prompts(D.demo_prompts(s), self_rows, s.val_self)
    base_val = D._score_base(base, prompts, s)
    emit(seed=seed, run="base", point=base_val.__dict__)
    t0 = time.time()
    data = D.build_pairs(str(base), prompts, s, progress=False)
    sft_dir = out / f"sft_{seed}"
    if not (sft_dir / "config.json").exists():
        D.run_sft(str(base), data["safety"], data["helpful"], sft_dir, s)
    own = D.sample_policy_pairs(str(sft_dir), data["safety"], data["helpful"], s, progress=False)
    emit(seed=seed, run="stages", seconds=time.time() - t0, own_unsafe=own["own_unsafe"])
    for name, kw in VARIANTS.items():
        v = replace(s, **kw)
        sel = D._selector(base, prompts, v, reference=base_val)
        t0 = time.time()
        D.run_preference(
            str(sft_dir),
            own["safety"],
            own["helpful"],
            "bfpo",
            out / f"bfpo_{seed}_{name}",
            v,
            str(out / f"ref_{seed}"),
            callbacks=[sel],
        )
        summ = sel.summary()
        emit(
            seed=seed,
            run=name,
            settings=kw,
            seconds=time.time() - t0,
            points=summ["points"],
            chosen=summ["chosen_step"],
            admissible=summ["admissible"],
        )
