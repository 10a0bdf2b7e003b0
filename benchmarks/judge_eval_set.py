"""Build the (unlabelled) rows of bfpo's judge-evaluation set: prompts from several sources, answered by
three models with ``bfpo evaluate``. The labels in src/bfpo/data/judge_eval/labelled.jsonl were then added
by hand (docs/judges.md); this script only makes the rows.

    python benchmarks/judge_eval_models.py --output_dir runs/jem        # base, sft, aligned (~11 min)
    python benchmarks/judge_eval_set.py --step prompts --output_file runs/jes/prompts.jsonl
    for m in base sft aligned; do
      bfpo evaluate --model_name_or_path runs/jem/$m --prompts runs/jes/prompts.jsonl \\
          --output_file runs/jes/$m.json --judge keyword --max_new_tokens 64 --bf16 --batch_size 16
    done                                                                 # writes runs/jes/$m.generations.jsonl
    python benchmarks/judge_eval_set.py --step rows --output_file runs/jes/rows.jsonl \\
        --generations runs/jes/{base,sft,aligned}.generations.jsonl
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from bfpo.args import choices

#: (suite, kind, number of prompts); bfpo-heldout is filtered to the kind
SOURCES = (
    ("advbench", "harmful", 15),
    ("harmbench", "harmful", 15),
    ("donotanswer", "harmful", 15),
    ("bfpo-heldout", "harmful", 15),
    ("mtbench", "benign", 16),
    ("overrefusal", "benign", 16),
    ("bfpo-heldout", "benign", 16),
)
#: of bfpo-heldout's benign prompts, this many are its borderline wordings ("How do I kill a stuck process")
BORDERLINE = 8


def prompts(out: str) -> None:
    from bfpo.eval.promptsets import load_suite

    rows = []
    for suite, kind, n in SOURCES:
        recs = [r for r in load_suite(suite) if r["kind"] == kind]  # load_suite interleaves categories
        if suite == "bfpo-heldout" and kind == "benign":
            edgy = [r for r in recs if r["category"] == "borderline"][:BORDERLINE]
            recs = edgy + [r for r in recs if r["category"] != "borderline"][: n - len(edgy)]
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
            f.write(
                json.dumps(
                    {
                        "id": i,
                        "model": r["model"],
                        "source": r["source"],
                        "kind": r["kind"],
                        "category": r["category"],
                        "split": splits[r["prompt"]],
                        "prompt": r["prompt"],
                        "response": r["response"],
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    print(f"{len(all_rows)} rows -> {out}")


@dataclass
class JudgeEvalSetArguments:
    """Settings of benchmarks/judge_eval_set.py."""

    step: str = choices("prompts", "rows", help="prompts: write the prompt file; rows: merge the generations files")
    output_file: str = field(metadata={"help": "the jsonl to write (required)"})
    generations: Optional[List[str]] = field(
        default=None,
        metadata={
            "help": "rows: the generations files of 'bfpo evaluate' (one per model; the model is the name's stem)"
        },
    )

    def __post_init__(self):
        if self.step == "rows" and not self.generations:
            raise ValueError("--step rows needs --generations FILE ...")


def main(argv: Optional[Sequence[str]] = None) -> None:
    from bfpo.args import parse

    (a,) = parse([JudgeEvalSetArguments], argv, prog="judge_eval_set.py", description=__doc__.split("\n\n")[0])
    if a.step == "prompts":
        prompts(a.output_file)
    else:
        rows(a.output_file, a.generations)


if __name__ == "__main__":
    main()
