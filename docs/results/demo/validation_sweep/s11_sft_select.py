"""Session 11, validation only: does checkpoint selection on the SFT stage (``sft_select_every``), with the
default SFT data or with more refusals in it, give the BFPO stage a better starting point?

Reuses a finished ``bfpo demo --seeds ... --compare`` run (RUN_DIR/seed_N): its red-teaming pairs
(``pairs/*.jsonl``), its validation prompts and its base model's validation point. For each seed and SFT
variant it trains the SFT stage with selection on the validation prompts, then samples the chosen SFT
model's own pairs and runs the BFPO stage with the demo's selection, as ``bfpo demo`` does. It never
generates on an evaluation set. Prints one JSON line per variant and writes them to OUT_DIR/runs.jsonl.

Usage: python s11_sft_select.py RUN_DIR OUT_DIR SEED [SEED ...]
"""

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from bfpo.data.adapters import load_pairs
from bfpo.eval.selection import SelectionPoint
from bfpo.experiments import demo as D

VARIANTS = {
    "sft32_select8": {"sft_select_every": 8},
    "sft48_refusal0.8_select8": {"sft_select_every": 8, "sft_steps": 48, "sft_refusal_ratio": 0.8},
}

run, out, seeds = Path(sys.argv[1]), Path(sys.argv[2]), [int(a) for a in sys.argv[3:]]
out.mkdir(parents=True, exist_ok=True)
base = run / "base"


def emit(**row):
    print(json.dumps(row), flush=True)
    with open(out / "runs.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


for seed in seeds:
    seed_dir = run / f"seed_{seed}"
    done = json.loads((seed_dir / "results.json").read_text())
    base_val = SelectionPoint(**done["selection"]["reference"])
    prompts = D.read_validation(seed_dir / "validation_prompts.jsonl")
    safety = load_pairs(str(seed_dir / "pairs" / "safety.jsonl"), schema="pairs", kind="safety")
    helpful = load_pairs(str(seed_dir / "pairs" / "helpful.jsonl"), schema="pairs", kind="helpful")
    emit(seed=seed, variant="default (from RUN_DIR)", bfpo_points=done["selection"]["points"])
    for name, kw in VARIANTS.items():
        s = replace(D.DemoSettings(), seed=seed, **kw)
        work = out / f"seed_{seed}" / name
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.time()
        sft_sel = D._selector(base, prompts, s, reference=base_val, every=s.sft_select_every)
        D.run_sft(str(base), safety, helpful, work / "sft", s, callbacks=[sft_sel])
        t_sft = time.time() - t0
        own = D.sample_policy_pairs(str(work / "sft"), safety, helpful, s, progress=False)
        sel = D._selector(base, prompts, s, reference=base_val, every=s.select_every)
        D.run_preference(
            str(work / "sft"),
            own["safety"],
            own["helpful"],
            "bfpo",
            work / "aligned",
            s,
            str(work / "ref-cache"),
            callbacks=[sel],
        )
        emit(
            seed=seed,
            variant=name,
            settings=kw,
            sft_chosen=sft_sel.summary()["chosen_step"],
            sft_points=sft_sel.summary()["points"],
            bfpo_chosen=sel.summary()["chosen_step"],
            bfpo_points=sel.summary()["points"],
            final=sel.summary()["chosen"],
            admissible=sel.summary()["admissible"],
            sft_seconds=t_sft,
            seconds=time.time() - t0,
        )
        shutil.rmtree(work, ignore_errors=True)
