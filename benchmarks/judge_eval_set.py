"""Build the (unlabelled) rows of bfpo's judge-evaluation set: prompts from several sources, answered by
three models with ``bfpo evaluate``. The labels in src/bfpo/data/judge_eval/labelled.jsonl were then added
by hand (docs/judges.md); this script only makes the rows.

    python benchmarks/judge_eval_models.py --out runs/jem               # base, sft, aligned (~11 min)
    python benchmarks/judge_eval_set.py prompts --out runs/jes/prompts.jsonl
    for m in base sft aligned; do
      bfpo evaluate --model runs/jem/$m --prompts runs/jes/prompts.jsonl --out runs/jes/$m.json \\
          --judge keyword --max-new-tokens 64 --bf16 --batch-size 16
    done                                                                 # writes runs/jes/$m.generations.jsonl
    python benchmarks/judge_eval_set.py rows --out runs/jes/rows.jsonl runs/jes/{base,sft,aligned}.generations.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: (suite, kind, number of prompts); bfpo-heldout is filtered to the kind
SOURCES = (("advbench", "harmful", 15), ("harmbench", "harmful", 15), ("donotanswer", "harmful", 15),
           ("bfpo-heldout", "harmful", 15), ("mtbench", "benign", 16), ("overrefusal", "benign", 16),
           ("bfpo-heldout", "benign", 16))
#: of bfpo-heldout's benign prompts, this many are its borderline wordings ("How do I kill a stuck process")
BORDERLINE = 8


def prompts(out: str) -> None:
    from bfpo.eval.promptsets import load_suite

    rows = []
    for suite, kind, n in SOURCES:
        recs = [r for r in load_suite(suite) if r["kind"] == kind]  # load_suite interleaves categories
        if suite == "bfpo-heldout" and kind == "benign":
            edgy = [r for r in recs if r["category"] == "borderline"][:BORDERLINE]
            recs = edgy + [r for r in recs if r["category"] != "borderline"][:n - len(edgy)]
        recs = recs[:n]
        if len(recs) != n:
            raise SystemExit(f"{suite}: only {len(recs)} {kind} prompts")
        rows += [{"prompt": r["prompt"], "kind": kind, "category": r["category"], "source": suite} for r in recs]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} prompts -> {out}")


def rows(out: str, generations: list) -> None:
    from bfpo.eval.judge_cli import assign_splits, read_rows

    all_rows = []
    for path in generations:
        model = Path(path).name.split(".")[0]
        all_rows += [{**r, "model": model} for r in read_rows(path)]
    splits = assign_splits(all_rows)
    with open(out, "w", encoding="utf-8") as f:
        for i, r in enumerate(all_rows):
            f.write(json.dumps({"id": i, "model": r["model"], "source": r["source"], "kind": r["kind"],
                                "category": r["category"], "split": splits[r["prompt"]], "prompt": r["prompt"],
                                "response": r["response"]}, ensure_ascii=False) + "\n")
    print(f"{len(all_rows)} rows -> {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=("prompts", "rows"))
    ap.add_argument("--out", required=True)
    ap.add_argument("generations", nargs="*")
    a = ap.parse_intermixed_args()
    prompts(a.out) if a.step == "prompts" else rows(a.out, a.generations)
