"""torch.profiler around one optimizer step of a ``train_step.py`` configuration (issue 15: profile first).

    python benchmarks/profile_step.py --output_file benchmarks/results/profile_paper_recipe.txt
    python benchmarks/profile_step.py --bench_config bfpo_down_proj_precomputed_frozen_bf16 --output_file /tmp/p.txt
    python benchmarks/profile_step.py --model_size tiny --output_file /tmp/p.txt    # seconds, for a check

Trains ``--warmup`` steps, profiles the next one, and writes the operators by self time (CPU, and CUDA on a
GPU) plus the share of the step spent in dtype casts (``aten::to``/``_to_copy``/``copy_``), the LM head
function and attention.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step as ts  # noqa: E402

from bfpo.args import choices  # noqa: E402

torch = ts.torch

GROUPS = {
    "casts (aten::copy_)": ("aten::copy_",),
    "matmuls (aten::mm/addmm/bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention (sdpa kernels)": ("aten::_scaled_dot_product", "aten::_flash_attention"),
    "elementwise exp/mul/add/sub/pow/rsqrt/silu": (
        "aten::exp",
        "aten::mul",
        "aten::add",
        "aten::sub",
        "aten::pow",
        "aten::rsqrt",
        "aten::silu",
        "aten::mean",
    ),
    "optimizer (AdamW foreach)": ("aten::_foreach",),
}


class ProfileOneStep(ts.TrainerCallback):
    def __init__(self, step: int, on_cuda: bool):
        self.step, self.prof, self.on_cuda = step, None, on_cuda

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            acts = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if self.on_cuda else []
            )
            self.prof = torch.profiler.profile(activities=acts, record_shapes=False)
            self.prof.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.prof is not None and state.global_step == self.step + 1:
            if self.on_cuda:
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)


def profile(config: str, model_size: str, warmup: int) -> Dict[str, Any]:
    import tempfile

    cfg = next(c for c in ts.CONFIGS if c["name"] == config)
    on_cuda = torch.cuda.is_available()
    model = ts.build_model(model_size)
    pairs = ts.synthetic_pairs(model.config.vocab_size)
    timer = ts.StepTimer()
    prof = ProfileOneStep(warmup, on_cuda)
    with tempfile.TemporaryDirectory() as out_dir:
        build = ts._trl_trainer if cfg["trainer"] == "trl" else ts._bfpo_trainer
        trainer = build(cfg, model, pairs, out_dir, warmup + 1, timer)
        trainer.add_callback(prof)
        trainer.train()
    events = prof.prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    groups = {
        g: sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
        for g, prefixes in GROUPS.items()
    }
    table = prof.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    return {
        "config": config,
        "model": model_size,
        "step_s": timer.times[-1],
        "step_s_all": timer.times,
        "self_cpu_s": total / 1e6,
        "groups_share_of_self_cpu": groups,
        "top": [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in rows[:25]],
        "table": table,
    }


@dataclass
class ProfileArguments:
    """Settings of benchmarks/profile_step.py."""

    output_file: str = field(metadata={"help": "text report (required); a .json with the same stem is written too"})
    bench_config: str = choices(
        *(c["name"] for c in ts.CONFIGS),
        default="bfpo_down_proj_precomputed",
        help="the train_step.py configuration to profile",
    )
    model_size: str = choices(*sorted(ts.MODELS), default="smollm2-135m", help="the train_step.py model shape")
    warmup: int = field(default=1, metadata={"help": "steps before the profiled one"})


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    from bfpo.args import parse

    (a,) = parse([ProfileArguments], argv, prog="profile_step.py", description=__doc__.split("\n")[0])
    import trl  # noqa: F401

    import bfpo.train  # noqa: F401

    res = ts.in_child(profile, a.bench_config, a.model_size, a.warmup)
    res["machine"] = {**ts.cpu_model(), "torch": torch.__version__, "threads": ts.in_child(torch.get_num_threads)}
    lines = [
        f"{a.bench_config} on {a.model_size}: profiled step {res['step_s']:.2f} s "
        f"(all steps {res['step_s_all']}), "
        f"{res['machine']['cpu']}, {res['machine']['threads']} threads",
        "",
    ]
    lines += [f"{g:<45} {100 * v:5.1f}% of self CPU time" for g, v in res["groups_share_of_self_cpu"].items()]
    lines += ["", res["table"]]
    os.makedirs(os.path.dirname(os.path.abspath(a.output_file)), exist_ok=True)
    with open(a.output_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.splitext(a.output_file)[0] + ".json", "w") as f:
        json.dump({k: v for k, v in res.items() if k != "table"}, f, indent=1)
    print("\n".join(lines[:8]))
    return res


if __name__ == "__main__":
    main()
