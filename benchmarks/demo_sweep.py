"""Sweep ``bfpo demo`` settings without redoing the red teaming, scored on the VALIDATION prompts only.

Reuses the training pairs and the validation prompts that one ``bfpo demo`` run wrote (``RUN/pairs``,
``RUN/validation_prompts.jsonl``, ``RUN/base``), trains the SFT stage once per SFT setting (cached under
``--output_dir``), then BFPO (or a DPO baseline, ``--mode``) with the given settings and the demo's
checkpoint selection, scores both on the validation prompts (held out of the training sources) and appends
a line to ``OUTPUT_DIR/results.jsonl``. The evaluation sets are never read here: settings are chosen on
validation, and only the chosen ones are then run by ``bfpo demo``. Both stages go through
:mod:`bfpo.train`'s entry points (via :func:`bfpo.experiments.demo.run_sft` / ``run_preference``).

    python benchmarks/demo_sweep.py --run_dir bfpo-demo --output_dir sweep --name mlp \
        --trainable gate_proj up_proj down_proj

Settings are read like every ``bfpo`` command's (:func:`bfpo.args.parse`): any
:class:`bfpo.experiments.demo.DemoSettings` field as ``--field value`` or in a ``--config FILE.yaml``;
``--help`` lists them all.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from bfpo.args import choices, parse, to_dict
from bfpo.data.adapters import load_pairs
from bfpo.eval.selection import SelectionPoint
from bfpo.experiments import demo
from bfpo.experiments.demo import GENERIC_REFUSALS, DemoSettings, run_preference, run_sft


@dataclass
class SweepArgs:
    """One sweep point: which demo run to reuse, where to write, and what to change besides DemoSettings."""

    run_dir: str = field(metadata={"help": "a finished `bfpo demo --output_dir` folder (required)"})
    output_dir: str = field(metadata={"help": "sweep folder: SFT cache, models, results.jsonl (required)"})
    name: str = field(metadata={"help": "this point's name (its model folder is OUTPUT_DIR/m_NAME)"})
    rejected: str = choices(
        "as-is",
        "generic",
        "handwritten",
        default="as-is",
        help=(
            "rejected side of the helpfulness pairs: as the run wrote them, short generic refusals, or the safety "
            "pairs' handwritten refusals"
        ),
    )
    mode: str = choices(
        "bfpo", "dpo_s", "dpo_h", "mix", default="bfpo", help="the preference stage: BFPO or a DPO baseline of Table 1"
    )


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args, s = parse([SweepArgs, DemoSettings], argv, prog="demo_sweep.py", description=__doc__.splitlines()[0])
    run, out_dir = Path(args.run_dir), Path(args.output_dir)
    safety, helpful = (load_pairs(str(run / "pairs" / f"{kind}.jsonl")) for kind in ("safety", "helpful"))
    if args.rejected != "as-is":
        from bfpo.eval.promptsets import safe_refusals

        pool = list(GENERIC_REFUSALS) if args.rejected == "generic" else [r["text"] for r in safe_refusals()]
        for i, rec in enumerate(helpful):
            rec.rejected = pool[i % len(pool)]
    val_file = run / "validation_prompts.jsonl"
    val = demo.read_validation(val_file)

    def score(model_dir: Path) -> dict:
        sets = demo.set_metrics(demo.evaluate_dir(model_dir, val_file, model_dir / "validation.json", s))
        return demo.headline(sets)

    key = json.dumps(
        [
            str(run.resolve()),
            s.sft_steps,
            s.sft_learning_rate,
            s.sft_refusal_ratio,
            s.sft_batch_size,
            s.sft_trainable,
            s.seed,
            s.max_length,
            s.bf16,
        ]
    )
    sft_dir = out_dir / f"sft_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    defaults = to_dict(DemoSettings())
    changed = {k: v for k, v in to_dict(s).items() if v != defaults[k]}
    out = {
        "name": args.name,
        "settings": changed,
        "rejected": args.rejected,
        "mode": args.mode,
        "sft_dir": str(sft_dir),
    }
    t0 = time.time()
    if not (sft_dir / "metrics.json").exists():
        run_sft(str(run / "base"), safety, helpful, sft_dir, s)
        (sft_dir / "metrics.json").write_text(json.dumps(score(sft_dir)))
    out["sft"] = json.loads((sft_dir / "metrics.json").read_text())
    out["sft_seconds"] = time.time() - t0
    base_file = out_dir / "base_validation.json"
    if not base_file.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        base_file.write_text(json.dumps(asdict(demo._score_base(run / "base", val, s))))
    base_point = SelectionPoint(**json.loads(base_file.read_text()))
    out["base"] = asdict(base_point)
    t0 = time.time()
    model_dir = out_dir / f"m_{args.name}"
    sel = demo._selector(run / "base", val, s, reference=base_point) if s.select_every else None
    run_preference(str(sft_dir), safety, helpful, args.mode, model_dir, s, None, callbacks=[sel] if sel else [])
    out["bfpo_seconds"] = time.time() - t0
    out["selection"] = sel.summary() if sel else None
    out["aligned"] = score(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(out) + "\n")
    print(
        f"{args.name}: SFT {out['sft']['harmful_compliance']:.1f} / {out['sft']['benign_refusal']:.1f} -> "
        f"{args.mode} {out['aligned']['harmful_compliance']:.1f} / {out['aligned']['benign_refusal']:.1f} "
        "(validation: harmful compliance % / benign refusal %)"
    )
    return out


if __name__ == "__main__":
    main()
