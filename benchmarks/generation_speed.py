"""Seconds to generate greedy answers with the demo model, by precision and batch size.

    python benchmarks/generation_speed.py --output_file benchmarks/results/generation_speed_avx2.json
    python benchmarks/generation_speed.py --prompts 16 --batch_sizes 16 --output_file /tmp/g.json

The prompts are the first ``--prompts`` HarmBench behaviours (``bfpo.eval.promptsets``), answered with
``--max_new_tokens`` new tokens by ``bfpo.models.generate.generate``, the function every demo stage calls.
Each (bf16, batch size) cell is timed once, after one untimed warm-up batch. The JSON holds the seconds, the
seconds per answer and ``bfpo.models.generate.machine_info()``: bf16 autocast is fast only where the
processor computes bf16 in hardware (``native_bf16``), so the result belongs to the machine it names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from bfpo.args import parse
from bfpo.experiments.settings import setting


@dataclass
class SpeedArgs:
    output_file: str = setting("where the JSON goes", default="generation_speed.json")
    model_name_or_path: Optional[str] = setting("model folder (default: SmolLM2-135M-Instruct)", default=None)
    prompts: int = setting("HarmBench prompts answered per cell", default=64)
    max_new_tokens: int = setting("new tokens per answer (the demo's default)", default=48)
    batch_sizes: List[int] = setting("batch sizes to time", default_factory=lambda: [16, 64])
    precisions: List[str] = setting(
        "what to time: float32, and/or bf16 (bf16 autocast)", default_factory=lambda: ["float32", "bf16"]
    )


def main(argv=None) -> dict:
    (a,) = parse([SpeedArgs], argv, prog="generation_speed.py")
    bad = sorted(set(a.precisions) - {"float32", "bf16"})
    if bad:
        raise SystemExit(f"generation_speed.py: --precisions {bad}: choose from float32, bf16")
    from bfpo.eval.promptsets import load_suite
    from bfpo.models.generate import generate, load_for_generation, machine_info, native_bf16
    from bfpo.models.smollm import smollm2_dir

    lm, tok = load_for_generation(a.model_name_or_path or str(smollm2_dir()))
    texts = [r["prompt"] for r in load_suite("harmbench")][: a.prompts]
    generate(lm, tok, texts[:4], max_new_tokens=4, batch_size=4, progress=False)  # warm-up
    cells = []
    for bf16 in [p == "bf16" for p in a.precisions]:
        for bs in a.batch_sizes:
            t = time.time()
            generate(lm, tok, texts, max_new_tokens=a.max_new_tokens, batch_size=bs, bf16=bf16, progress=False)
            sec = time.time() - t
            cells.append({"bf16": bf16, "batch_size": bs, "seconds": sec, "seconds_per_answer": sec / len(texts)})
            print(f"bf16={bf16} batch={bs}: {sec:.1f} s, {sec / len(texts):.2f} s per answer", flush=True)
    out = {
        "prompts": len(texts),
        "max_new_tokens": a.max_new_tokens,
        "cells": cells,
        "native_bf16": native_bf16(),
        "machine": machine_info(),
    }
    Path(a.output_file).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output_file).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
