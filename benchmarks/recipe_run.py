"""A short run of the paper recipe's training settings on a SmolLM2-size model (issue 15, part 3).

    python benchmarks/recipe_run.py --output_file /tmp/recipe.json                 # 20 steps, SmolLM2-135M shape
    python benchmarks/recipe_run.py --output_file /tmp/r.json --attn flash_attention_2 --set padding_free=true
    python benchmarks/recipe_run.py --output_file /tmp/r.json --model tiny --steps 2   # plumbing check on CPU
    python benchmarks/recipe_run.py --help                                         # every setting

The training settings of ``recipes/paper_mistral_bfpo.yaml`` (tau 0.01, its alpha, down_proj only, reference
log-probs precomputed, lr 5e-7 cosine with 10% warm-up, 8 pairs x 2 accumulation, bf16, activation
checkpointing, seed 42) is used as written, except what a benchmark must change (output and cache folders,
``max_steps``, logging every step, no checkpoints, no tensorboard) and ``--set NAME=VALUE`` overrides (any
``bfpo train`` setting, by its flat name: ``--set padding_free=true dtype=float32``). The model is
SmolLM2-135M's architecture with random weights (seed 0) in the recipe's ``dtype`` (bfloat16) and the
chosen attention implementation; the pairs are synthetic token ids within the recipe's ``max_length`` 1024 and
``max_prompt_length`` 512.

Reported: seconds per optimizer step, tokens/s, peak CUDA memory and peak RSS, the loss of every step, and
how many trainable weights the run moved (with bf16 weights and lr 5e-7 most AdamW updates are below half a
bf16 ulp of the weight and round away).
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step as ts  # noqa: E402  (offline environment, torch, transformers)

from bfpo.args import ConfigError, choices, parse  # noqa: E402

torch = ts.torch
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RECIPE = os.path.join(ROOT, "recipes", "paper_mistral_bfpo.yaml")


def flash_attention_available() -> Optional[str]:
    """None when ``flash_attention_2`` can run here, else why not."""
    import importlib.util

    if not torch.cuda.is_available():
        return "flash-attention needs CUDA"
    if importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed"
    return None


def train_argv(
    recipe_path: str, work: str, steps: int, overrides: Optional[List[str]] = None, use_cpu: bool = True
) -> List[str]:
    """The ``bfpo train`` command line of the run: the recipe, what a benchmark must change, the overrides."""
    flags = [
        "--config",
        recipe_path,
        "--output_dir",
        f"{work}/out",
        "--ref_cache_dir",
        f"{work}/ref",
        "--max_steps",
        str(steps),
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--use_cpu",
        str(use_cpu).lower(),
    ]
    for item in overrides or []:  # NAME=VALUE, as --NAME VALUE (after the defaults above: flags win)
        name, _, value = item.partition("=")
        flags += [f"--{name}", value]
    return flags


def run(
    model_size: str = "smollm2-135m",
    attn: str = "sdpa",
    steps: int = 20,
    recipe_path: str = DEFAULT_RECIPE,
    overrides: Optional[List[str]] = None,
) -> Dict[str, Any]:
    import logging
    import warnings

    import transformers
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from bfpo.testing import tiny_tokenizer
    from bfpo.train import BFPOTrainer
    from bfpo.train.model_io import resolve_dtype
    from bfpo.train.run import train_arguments

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    logging.getLogger("bfpo").setLevel(logging.WARNING)
    on_cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="bfpo-recipe-run-") as tmp:
        model_args, _, config, _ = train_arguments(train_argv(recipe_path, tmp, steps, overrides, use_cpu=not on_cuda))
        dtype = resolve_dtype(model_args.dtype)
        model = ts.build_model(model_size, attn=attn).to(dtype)
        n_pairs = steps * config.per_device_train_batch_size * config.gradient_accumulation_steps
        lengths = ts.length_spec(config.max_length)
        lengths["max_prompt"] = min(lengths["max_prompt"], config.max_prompt_length or lengths["max_prompt"])
        pairs = ts.synthetic_pairs(model.config.vocab_size, n=n_pairs, seed=config.seed, **lengths)
        tok = tiny_tokenizer()
        tok.pad_token_id = 0
        timer = ts.StepTimer()
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer = BFPOTrainer(model, config, train_dataset=pairs, processing_class=tok, callbacks=[timer])
        setup_s = time.perf_counter() - t0
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        moved = changed = 0
        max_update = 0.0
        for n, p in model.named_parameters():
            if n in trainable:
                diff = (p.detach() - trainable[n]).float()
                moved += int((diff != 0).sum())
                changed += int(trainable[n].numel())
                max_update = max(max_update, float(diff.abs().max()))
        logs = [h for h in trainer.state.log_history if "loss" in h]
        stats = ts.batch_token_stats(pairs, padding_free=config.padding_free)
        tokens_per_step = stats["tokens"] / steps
        measured = timer.times[1:] if len(timer.times) > 1 else timer.times
        step_s = statistics.median(measured)
        return {
            "model": model_size,
            "attn_implementation": attn,
            "param_dtype": str(dtype).replace("torch.", ""),
            "bf16_autocast": bool(config.bf16),
            "padding_free": bool(config.padding_free),
            "activation_checkpointing": bool(
                getattr(config, "activation_checkpointing", False) or getattr(config, "gradient_checkpointing", False)
            ),
            "device": "cuda" if on_cuda else "cpu",
            "steps": trainer.state.global_step,
            "pairs_per_step": n_pairs // steps,
            "tokens_per_step": tokens_per_step,
            "step_s": step_s,
            "step_s_all": timer.times,
            "tokens_per_s": tokens_per_step / step_s,
            "setup_s": setup_s,
            "train_s": train_s,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "losses": [h["loss"] for h in logs],
            "loss_finite": all(math.isfinite(h["loss"]) for h in logs),
            "trainable_params": changed,
            "trainable_params_moved": moved,
            "trainable_moved_fraction": moved / changed if changed else 0.0,
            "max_abs_update": max_update,
            "settings": {
                k: getattr(config, k)
                for k in (
                    "loss",
                    "tau",
                    "alpha",
                    "trainable",
                    "learning_rate",
                    "per_device_train_batch_size",
                    "gradient_accumulation_steps",
                    "max_length",
                    "max_prompt_length",
                    "precompute_ref_log_probs",
                    "seed",
                )
            }
            | {
                "lr_scheduler_type": str(config.lr_scheduler_type),
                "recipe": os.path.relpath(recipe_path, ROOT),
                "overrides": overrides or [],
            },
        }


ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclass
class RecipeRunArguments:
    """Settings of ``recipe_run.py`` (``--help`` lists them)."""

    output_file: str = field(metadata={"help": "where to write the results JSON (required)"})
    model: str = choices(*sorted(ts.MODELS), default="smollm2-135m", help="the train_step.py model shape")
    attn: str = choices(*ATTENTION, default="sdpa", help="attention implementation of the model")
    steps: int = field(default=20, metadata={"help": "optimizer steps (max_steps of the run)"})
    recipe: str = field(default=DEFAULT_RECIPE, metadata={"help": "the recipe whose training settings are used"})
    set: List[str] = field(  # the flag is --set, as before
        default_factory=list,
        metadata={
            "help": "overrides of the recipe, NAME=VALUE: any `bfpo train` setting by its flat name, e.g. "
            "--set padding_free=true dtype=float32"
        },
    )

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        bad = [item for item in self.set if "=" not in item or not item.partition("=")[0]]
        if bad:
            raise ValueError(f"--set takes NAME=VALUE items, got {', '.join(map(repr, bad))}")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    (a,) = parse([RecipeRunArguments], argv, prog="recipe_run.py", description=__doc__.split("\n")[0])
    if a.attn == "flash_attention_2" and flash_attention_available():
        raise SystemExit(f"recipe_run: --attn flash_attention_2: {flash_attention_available()}")
    res = run(a.model, a.attn, a.steps, a.recipe, a.set)
    os.makedirs(os.path.dirname(os.path.abspath(a.output_file)), exist_ok=True)
    with open(a.output_file, "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(
        f"{a.model} {a.attn} packed={res['padding_free']} on {res['device']}: {res['steps']} steps, "
        f"{res['step_s']:.3f} s/step, {res['tokens_per_s']:.0f} tok/s, loss {res['losses'][0]:.4f} -> "
        f"{res['losses'][-1]:.4f}, moved {res['trainable_moved_fraction']:.1%} of trainable weights",
        flush=True,
    )
    return res


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:  # a setting it cannot use: the message, exit status 2 (as argparse's errors)
        print(f"recipe_run: {e}", file=sys.stderr)
        sys.exit(2)
