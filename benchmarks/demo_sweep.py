"""Sweep ``bfpo demo`` settings without redoing the red teaming: the measured rows of docs/demo.md.

Reuses the training pairs and the held-out prompts that one ``bfpo demo`` run wrote (``RUN/pairs``,
``RUN/heldout_prompts.jsonl``, ``RUN/base``), trains the SFT stage once per SFT setting (cached under
``--out``), then BFPO with the given settings, evaluates both on the held-out prompts and appends a line
to ``--out/results.jsonl``.

    python benchmarks/demo_sweep.py --run bfpo-demo --out sweep \
        '{"name": "mlp", "trainable": ["gate_proj", "up_proj", "down_proj"]}'

The JSON holds a ``name``, any :class:`bfpo.experiments.demo.DemoSettings` field, and optionally ``"rejected"``: the
rejected side of the helpfulness pairs, ``"as-is"`` (default: what the run wrote), ``"generic"`` (short
refusals) or ``"handwritten"`` (the safety pairs' refusals).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

from bfpo.data.adapters import load_pairs
from bfpo.experiments.demo import GENERIC_REFUSALS, DemoSettings, evaluate_dir, headline, run_preference, run_sft


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished `bfpo demo --out` directory")
    p.add_argument("--out", type=Path, required=True, help="sweep directory (SFT cache, models, results.jsonl)")
    p.add_argument("config", help="JSON: name, DemoSettings fields, optional rejected")
    args = p.parse_args()
    cfg = json.loads(args.config)
    name, rejected, mode = cfg.pop("name"), cfg.pop("rejected", "as-is"), cfg.pop("mode", "bfpo")
    s = replace(DemoSettings(), **cfg)
    safety, helpful = (load_pairs(str(args.run / "pairs" / f"{kind}.jsonl")) for kind in ("safety", "helpful"))
    if rejected != "as-is":
        from bfpo.eval.promptsets import safe_refusals

        pool = list(GENERIC_REFUSALS) if rejected == "generic" else [r["text"] for r in safe_refusals()]
        for i, rec in enumerate(helpful):
            rec.rejected = pool[i % len(pool)]
    held = args.run / "heldout_prompts.jsonl"
    key = json.dumps([str(args.run.resolve()), s.sft_steps, s.sft_lr, s.sft_refusal_ratio, s.sft_batch_size,
                      s.sft_trainable, s.seed])
    sft_dir = args.out / f"sft_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    out = {"name": name, "settings": cfg, "rejected": rejected, "mode": mode, "sft_dir": str(sft_dir)}
    t0 = time.time()
    if not (sft_dir / "metrics.json").exists():
        run_sft(str(args.run / "base"), safety, helpful, sft_dir, s)
        metrics = headline(evaluate_dir(sft_dir, held, sft_dir / "eval.json", s))
        (sft_dir / "metrics.json").write_text(json.dumps(metrics))
    out["sft"] = json.loads((sft_dir / "metrics.json").read_text())
    out["sft_seconds"] = time.time() - t0
    t0 = time.time()
    model_dir = args.out / f"m_{name}"
    run_preference(str(sft_dir), safety, helpful, mode, model_dir, s, None)
    out["bfpo_seconds"] = time.time() - t0
    out["aligned"] = headline(evaluate_dir(model_dir, held, model_dir / "eval.json", s))
    with open(args.out / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(out) + "\n")
    print(f"{name}: SFT {out['sft']['harmful_compliance']:.1f} / {out['sft']['benign_refusal']:.1f} -> "
          f"{mode} {out['aligned']['harmful_compliance']:.1f} / {out['aligned']['benign_refusal']:.1f} "
          "(harmful compliance % / benign refusal %)")


if __name__ == "__main__":
    main()
