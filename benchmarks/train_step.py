"""Training-step benchmark: bfpo's BFPOTrainer against TRL's DPOTrainer, side by side (issue 7).

    python benchmarks/train_step.py --output_file benchmarks/results/cpu.json  # full (SmolLM2-135M + tiny)
    python benchmarks/train_step.py --output_file /tmp/quick.json --quick      # tiny model, a few steps

Every configuration trains the same randomly initialised model (same seed) on the same synthetic
pairs (8 pairs, prompt+response 128-256 tokens, token ids drawn once from a seeded generator), with
one optimizer step per batch of all 8 pairs, bf16 autocast, AdamW, no gradient checkpointing.

Each configuration runs in its own forked child process, so its peak RSS (``ru_maxrss``) is its own;
the parent only imports the libraries (no torch op runs before a fork), so every child starts from the
same baseline, which is reported as ``machine.baseline_rss_mb``.

Reported per configuration: tokens/s (non-padding tokens of chosen+rejected per optimizer step over the
median step time after warm-up), seconds per step, peak RSS, peak CUDA memory (on a GPU), the padding
the batch carried, and achieved FLOP/s against a bf16 matmul roofline measured in the same run (model
FLOPs: forward on the real tokens and the LM head on response tokens, input gradients through every
layer, weight gradients only for trainable matrices; the same count for every trainer, so the ratio is
work done per second, not work wasted).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# torch.cuda.is_available() through NVML: the parent never creates a CUDA context, so forked children can
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

# Heavy imports happen once here, in the parent, so forked children do not pay for them.
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback  # noqa: E402

N_PAIRS = 8
MIN_LEN, MAX_LEN = 128, 256
MIN_PROMPT, MAX_PROMPT = 24, 96

MODELS: Dict[str, Dict[str, Any]] = {
    # SmolLM2-135M's architecture (HuggingFaceTB/SmolLM2-135M config.json), random weights.
    "smollm2-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    # the same width, heads and vocabulary with 4 of the 30 layers: the model of the scaling sweep
    # (benchmarks/scaling.py), where the vocabulary is a large share of the per-token cost
    "smollm2-135m-4l": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    # ... and with a 6x smaller vocabulary: a term that grows with tokens x vocab would show as a steeper slope
    "smollm2-135m-4l-v8k": dict(
        vocab_size=8192,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        vocab_size=2048,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),
}

PF = {"padding_free": True}
#: (name, trainer, trainable, precomputed reference, extra BFPOConfig settings)
CONFIGS: List[Dict[str, Any]] = [
    dict(name="trl_ipo_full", trainer="trl", trainable=None, precompute=True),
    dict(name="trl_ipo_down_proj", trainer="trl", trainable=["down_proj"], precompute=True),
    dict(name="bfpo_full_precomputed", trainer="bfpo", trainable=None, precompute=True, bfpo_args=PF),
    dict(name="bfpo_full_ref_model", trainer="bfpo", trainable=None, precompute=False, bfpo_args=PF),
    dict(name="bfpo_down_proj_precomputed", trainer="bfpo", trainable=["down_proj"], precompute=True, bfpo_args=PF),
    dict(name="bfpo_down_proj_ref_model", trainer="bfpo", trainable=["down_proj"], precompute=False, bfpo_args=PF),
    # the same paper recipe with the padded batch, to measure what padding costs
    dict(name="bfpo_down_proj_precomputed_padded", trainer="bfpo", trainable=["down_proj"], precompute=True),
    # the paper recipe with frozen linear weights kept in bf16 during training (bfpo.train.precision); the
    # weights are first rounded to bf16, as a bf16 checkpoint loads, so that the cast is exact
    dict(
        name="bfpo_down_proj_precomputed_frozen_bf16",
        trainer="bfpo",
        trainable=["down_proj"],
        precompute=True,
        bfpo_args=PF,
        frozen_bf16=True,
    ),
    # TRL with Liger's layer kernels (RMSNorm, RoPE, SwiGLU; TRL 1.16 keeps its own fused LM head and turns off
    # Liger's fused linear cross-entropy); needs CUDA and the liger-kernel package, skipped otherwise
    dict(name="trl_ipo_full_liger", trainer="trl", trainable=None, precompute=True, liger=True),
    dict(name="trl_ipo_down_proj_liger", trainer="trl", trainable=["down_proj"], precompute=True, liger=True),
]

#: which TRL run each of ours is compared with: the one with the same trainable parameters
EQUAL_SETTINGS = {None: "trl_ipo_full", ("down_proj",): "trl_ipo_down_proj"}
PAPER_RECIPE, TRL_USUAL = "bfpo_down_proj_precomputed", "trl_ipo_full"


# ----------------------------------------------------------------------------------------- set-up
def skip_reason(cfg: Dict[str, Any]) -> Optional[str]:
    """Why a configuration cannot run on this machine (None: it can)."""
    if cfg.get("liger"):
        import importlib.util

        if not torch.cuda.is_available():
            return "Liger kernels are Triton kernels: CUDA only"
        if importlib.util.find_spec("liger_kernel") is None:
            return "liger-kernel is not installed (pip install liger-kernel)"
    return None


def build_model(size: str, seed: int = 0, attn: str = "sdpa") -> LlamaForCausalLM:
    cfg = LlamaConfig(**MODELS[size], pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation=attn)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def length_spec(max_len: int) -> Dict[str, int]:
    """Sequence lengths of a sweep point: prompt+response in [max_len/2, max_len], prompt in
    [3/32, 3/8] of max_len (the ratios of the default 128-256 / 24-96 batch)."""
    return {
        "min_len": max_len // 2,
        "max_len": max_len,
        "min_prompt": max(2, 3 * max_len // 32),
        "max_prompt": 3 * max_len // 8,
    }


def synthetic_pairs(
    vocab_size: int,
    n: int = N_PAIRS,
    seed: int = 0,
    min_len: int = MIN_LEN,
    max_len: int = MAX_LEN,
    min_prompt: int = MIN_PROMPT,
    max_prompt: int = MAX_PROMPT,
) -> List[Dict[str, Any]]:
    """``n`` tokenised pairs whose prompt+response lengths lie in [min_len, max_len]; half safety, half helpful."""
    g = torch.Generator().manual_seed(seed)

    def ints(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    def ids(k):
        return torch.randint(3, vocab_size, (k,), generator=g).tolist()

    pairs = []
    for i in range(n):
        p = ints(min_prompt, max_prompt)
        prompt = [1] + ids(p - 1)
        chosen = ids(ints(min_len, max_len) - p - 1) + [2]
        rejected = ids(ints(min_len, max_len) - p - 1) + [2]
        pairs.append(
            {
                "prompt_ids": prompt,
                "chosen_ids": chosen,
                "rejected_ids": rejected,
                "safe_chosen": float(i % 4 != 3),
                "safe_rejected": float(i % 4 == 1),
                "is_safety": int(i % 2 == 0),
            }
        )
    return pairs


def batch_token_stats(pairs: List[Dict[str, Any]], padding_free: bool = False) -> Dict[str, int]:
    """Real tokens of the concatenated [chosen; rejected] batch, the positions the model sees, and the
    response tokens whose log-probs count."""
    lens = [len(p["prompt_ids"]) + len(p[s]) for s in ("chosen_ids", "rejected_ids") for p in pairs]
    real = sum(lens)
    positions = real if padding_free else len(lens) * max(lens)
    response = sum(len(p[s]) for s in ("chosen_ids", "rejected_ids") for p in pairs)
    return {"tokens": real, "positions": positions, "response_tokens": response, "seq_lens": lens}


def forward_flops(model, pairs: List[Dict[str, Any]]) -> Dict[str, float]:
    """FLOPs of one forward over the pairs' real tokens: every linear layer of the blocks on every token
    (``linear``), the LM head on response tokens only (``lm_head``), and attention (``attention``: QK^T and
    AV over the whole L x L square of each sequence, as the numbers in docs/performance.md were computed)."""
    cfg = model.config
    stats = batch_token_stats(pairs)
    tokens, resp = stats["tokens"], stats["response_tokens"]
    layer_params = sum(p.numel() for n, p in model.model.layers.named_parameters() if p.dim() == 2)
    head = cfg.vocab_size * cfg.hidden_size
    heads_dim = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    attn = sum(2 * 2 * L * L * heads_dim for L in stats["seq_lens"]) * cfg.num_hidden_layers
    return {"linear": float(2 * tokens * layer_params), "lm_head": float(2 * resp * head), "attention": float(attn)}


def model_flops(model, pairs: List[Dict[str, Any]], trainable: Optional[List[str]], ref_forward: bool) -> float:
    """FLOPs of one optimizer step as defined in the module docstring (the same for every trainer)."""
    f = forward_flops(model, pairs)
    tokens = batch_token_stats(pairs)["tokens"]
    fwd = f["linear"] + f["lm_head"] + f["attention"]
    bwd_input = fwd  # gradients flow back through every layer (down_proj of layer 0 is trainable)
    if trainable:
        import re

        rx = [re.compile(t) for t in trainable]
        w = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and any(r.search(n) for r in rx))
        bwd_weight = 2 * tokens * w
    else:
        bwd_weight = f["linear"] + f["lm_head"]
    return float(fwd + bwd_input + bwd_weight + (fwd if ref_forward else 0))


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (``on_step_begin`` to ``on_step_end``; on CUDA after a synchronize,
    so queued kernels count in the step that launched them)."""

    def __init__(self):
        self.times: List[float] = []
        self._t0 = 0.0

    @staticmethod
    def _sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._t0)


def _freeze(model, trainable: Optional[List[str]]) -> None:
    from bfpo.train.layers import select_trainable

    select_trainable(model, trainable)


def _trl_trainer(cfg, model, pairs, out_dir, steps, timer):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class PreTokenizedDPOTrainer(DPOTrainer):
        """TRL 1.16 tokenises text columns in ``_prepare_dataset``; our pairs are already token ids in
        the columns its collator reads (prompt_ids, chosen_ids, rejected_ids), so that step is skipped."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    from bfpo.testing import tiny_tokenizer

    tok = tiny_tokenizer()  # only its pad id is used: the token ids never pass through a tokenizer
    ds = Dataset.from_list([{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in pairs])
    n = len(pairs)
    args = DPOConfig(
        output_dir=out_dir,
        loss_type=["ipo"],
        beta=0.01,
        precompute_ref_log_probs=cfg["precompute"],
        bf16=True,
        use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=n,
        precompute_ref_batch_size=n,
        gradient_checkpointing=False,
        max_length=None,
        padding_free=False,
        max_steps=steps,
        learning_rate=1e-6,
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
        use_liger_kernel=bool(cfg.get("liger")),
    )
    _freeze(model, cfg["trainable"])
    return PreTokenizedDPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])


def _bfpo_trainer(cfg, model, pairs, out_dir, steps, timer):
    from bfpo.testing import tiny_tokenizer
    from bfpo.train import BFPOConfig, BFPOTrainer

    tok = tiny_tokenizer()
    args = BFPOConfig(
        output_dir=out_dir,
        loss="bfpo",
        tau=0.01,
        trainable=cfg["trainable"],
        precompute_ref_log_probs=cfg["precompute"],
        ref_cache_dir=os.path.join(out_dir, "ref"),
        bf16=True,
        use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=len(pairs),
        per_device_eval_batch_size=len(pairs),
        max_steps=steps,
        learning_rate=1e-6,
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
        **cfg.get("bfpo_args", {}),
    )
    tok.pad_token_id = 0
    callbacks = [timer]
    if cfg.get("frozen_bf16"):
        from bfpo.train.precision import FrozenLinearWeightsCallback

        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
        callbacks.append(FrozenLinearWeightsCallback())
    return BFPOTrainer(model, args, train_dataset=pairs, processing_class=tok, callbacks=callbacks)


def run_config(
    cfg: Dict[str, Any],
    size: str,
    warmup: int,
    steps: int,
    n_pairs: int = N_PAIRS,
    lengths: Optional[Dict[str, int]] = None,
) -> Dict[str, Any]:
    """Build, train ``warmup + steps`` optimizer steps, and measure (runs inside the child).
    ``n_pairs`` pairs per optimizer step, sequence lengths as :func:`synthetic_pairs` (``lengths``)."""
    import logging
    import warnings

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    logging.getLogger("bfpo").setLevel(logging.WARNING)
    on_cuda = torch.cuda.is_available()
    model = build_model(size)
    pairs = synthetic_pairs(model.config.vocab_size, n=n_pairs, **(lengths or {}))
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix=f"bench-{cfg['name']}-") as out_dir:
        build = _trl_trainer if cfg["trainer"] == "trl" else _bfpo_trainer
        if on_cuda:  # before set-up, so bfpo's reference precompute counts as TRL's (done in train()) does
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer = build(cfg, model, pairs, out_dir, warmup + steps, timer)
        setup_s = time.perf_counter() - t0
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        trainer.train()
    measured = timer.times[warmup:]
    step_s = statistics.median(measured)
    padding_free = bool(cfg.get("bfpo_args", {}).get("padding_free", False))
    stats = batch_token_stats(pairs, padding_free=padding_free)
    flops = model_flops(model, pairs, cfg["trainable"], ref_forward=not cfg["precompute"])
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "name": cfg["name"],
        "trainer": cfg["trainer"],
        "model": size,
        "trainable": cfg["trainable"] or "all",
        "trainable_params": n_train,
        "precomputed_ref": cfg["precompute"],
        "padding_free": padding_free,
        "pairs_per_step": n_pairs,
        "max_len": max(stats["seq_lens"]),
        "liger": bool(cfg.get("liger")),
        "tokens_per_step": stats["tokens"],
        "positions_per_step": stats["positions"],
        "response_tokens_per_step": stats["response_tokens"],
        "padding_fraction": 1.0 - stats["tokens"] / stats["positions"],
        "tokens_per_s": stats["tokens"] / step_s,
        "step_s": step_s,
        "step_s_all": timer.times,
        "setup_s": setup_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None,
        "model_flops_per_step": flops,
        "achieved_flops": flops / step_s,
    }


def measure_roofline(seconds: float = 1.0) -> Dict[str, float]:
    """Best bf16 and fp32 matmul FLOP/s on shapes like the model's (tokens x hidden @ hidden x 4*hidden)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        best = 0.0
        for m, k, n in ((3072, 576, 1536), (2048, 2048, 2048)):
            a = torch.randn(m, k, device=dev, dtype=dtype)
            b = torch.randn(k, n, device=dev, dtype=dtype)
            torch.mm(a, b)
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 2:
                torch.mm(a, b)
                reps += 1
            if dev == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - t0))
        out[str(dtype).replace("torch.", "")] = best
    return out


# ------------------------------------------------------------------------------- process plumbing
def _child(target, args, conn) -> None:
    try:
        conn.send(("ok", target(*args)))
    except BaseException:  # the parent reports it with the config's name
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def in_child(target, *args):
    """Run ``target(*args)`` in a forked child; return its result (or raise with the child's traceback).
    If something in this process has already created a CUDA context (which a forked child cannot use), the
    child is spawned instead (it re-imports the libraries: slower to start, the same measurement)."""
    ctx = mp.get_context("spawn" if torch.cuda.is_available() and torch.cuda.is_initialized() else "fork")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(target, args, child_conn))
    proc.start()
    child_conn.close()
    status, payload = parent_conn.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(payload)
    return payload


def cpu_model() -> Dict[str, Any]:
    """The processor's model name and the matmul-relevant flags it reports (AMX, AVX-512 BF16, ...)."""
    cpu, flags = platform.processor(), []
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        have = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        flags = sorted(f for f in set(have) if f.startswith(("amx", "avx512_bf16", "avx512f", "avx512_fp16", "avx2")))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_flags": flags, "amx": any(f.startswith("amx") for f in flags)}


def machine_info(roofline: Dict[str, float]) -> Dict[str, Any]:
    info = {
        **cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        # asked in a child: the parent never initialises CUDA (its forked children could not use it)
        "gpu": in_child(torch.cuda.get_device_name, 0) if torch.cuda.is_available() else None,
        "roofline_flops": roofline,
        "baseline_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        pass
    return info


def ratios(configs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Each of our configs against the TRL run with the same trainable parameters and the same model."""
    by = {(c["model"], c["name"]): c for c in configs}
    out = {}
    for c in configs:
        if c["trainer"] != "bfpo":
            continue
        key = None if c["trainable"] == "all" else tuple(c["trainable"])
        base = by.get((c["model"], EQUAL_SETTINGS.get(key)))
        if base is None:
            continue
        name = c["name"] if c["model"] == configs[0]["model"] else f"{c['model']}/{c['name']}"
        out[name] = {
            "vs": base["name"],
            "tokens_per_s": c["tokens_per_s"] / base["tokens_per_s"],
            "peak_rss": c["peak_rss_mb"] / base["peak_rss_mb"],
        }
        if c.get("peak_cuda_mb") and base.get("peak_cuda_mb"):
            out[name]["peak_cuda"] = c["peak_cuda_mb"] / base["peak_cuda_mb"]
        liger = by.get((c["model"], base["name"] + "_liger"))
        if liger is not None:  # the same comparison against TRL with Liger's kernels
            out[name + "_vs_liger"] = {
                "vs": liger["name"],
                "tokens_per_s": c["tokens_per_s"] / liger["tokens_per_s"],
                "peak_rss": c["peak_rss_mb"] / liger["peak_rss_mb"],
            }
            if c.get("peak_cuda_mb") and liger.get("peak_cuda_mb"):
                out[name + "_vs_liger"]["peak_cuda"] = c["peak_cuda_mb"] / liger["peak_cuda_mb"]
        if c["name"] == PAPER_RECIPE and (c["model"], TRL_USUAL) in by:
            usual = by[(c["model"], TRL_USUAL)]
            out[name + "_vs_" + TRL_USUAL] = {
                "vs": TRL_USUAL,
                "tokens_per_s": c["tokens_per_s"] / usual["tokens_per_s"],
                "peak_rss": c["peak_rss_mb"] / usual["peak_rss_mb"],
            }
    return out


def markdown_table(res: Dict[str, Any]) -> str:
    """The results as a markdown table (one row per model and configuration) plus the ratios."""
    from bfpo.figures import markdown_table as table

    rows = []
    for c in res["configs"]:
        ref = "precomputed" if c["precomputed_ref"] else "model"
        pad = "packed, 0%" if c["padding_free"] else f"{c['padding_fraction']:.0%}"
        cuda = f" / {c['peak_cuda_mb']:.0f} CUDA" if c.get("peak_cuda_mb") else ""
        rows.append(
            [
                c["model"],
                c["name"],
                f"{c['trainable_params'] / 1e6:.1f}M",
                ref,
                pad,
                f"{c['tokens_per_s']:.0f}",
                f"{c['step_s']:.2f}",
                f"{c['peak_rss_mb']:.0f}{cuda}",
                f"{c['achieved_flops'] / 1e9:.0f}",
                f"{100 * c['achieved_vs_roofline_bf16']:.0f}%",
            ]
        )
    lines = [
        table(
            [
                "model",
                "config",
                "trainable params",
                "ref",
                "padding",
                "tokens/s",
                "s/step",
                "peak RSS (MB)",
                "GFLOP/s",
                "% of bf16 matmul",
            ],
            rows,
            align="llrlrrrrrr",
        )
    ]
    cuda = any("peak_cuda" in r for r in res["ratios_vs_trl"].values())
    rows = [
        [name, r["vs"], f"{r['tokens_per_s']:.2f}x", f"{r['peak_rss']:.2f}x"]
        + ([f"{r['peak_cuda']:.2f}x" if "peak_cuda" in r else ""] if cuda else [])
        for name, r in res["ratios_vs_trl"].items()
    ]
    header = ["ours", "against TRL", "tokens/s ratio", "peak RSS ratio"] + (["peak CUDA ratio"] if cuda else [])
    lines += ["", table(header, rows, align="llrr" + ("r" if cuda else ""))]
    for name, why in res.get("skipped", {}).items():
        lines.append(f"\n{name}: skipped ({why})")
    return "\n".join(lines)


@dataclass
class TrainStepArguments:
    """Settings of benchmarks/train_step.py."""

    output_file: Optional[str] = field(default=None, metadata={"help": "where to write the results JSON"})
    table: Optional[str] = field(
        default=None, metadata={"help": "print the markdown table of this results file and exit"}
    )
    quick: bool = field(default=False, metadata={"help": "tiny model, a few steps (under a minute)"})
    configs: Optional[List[str]] = field(
        default=None, metadata={"help": "only these configuration names", "choices": tuple(c["name"] for c in CONFIGS)}
    )
    models: Optional[List[str]] = field(
        default=None,
        metadata={"help": "only these models (default: smollm2-135m tiny; --quick: tiny)", "choices": tuple(MODELS)},
    )
    steps: Optional[int] = field(default=None, metadata={"help": "measured steps per config (after warm-up)"})
    warmup: Optional[int] = field(default=None, metadata={"help": "warm-up steps per config"})

    def __post_init__(self):
        if not self.table and not self.output_file:
            raise ValueError("--output_file is required (or --table RESULTS.json)")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    from bfpo.args import parse

    (a,) = parse([TrainStepArguments], argv, prog="train_step.py", description=__doc__.split("\n")[0])
    if a.table:
        with open(a.table) as f:
            res = json.load(f)
        print(markdown_table(res))
        return res
    import trl  # noqa: F401  (imported before forking, like torch)
    from trl import DPOTrainer  # noqa: F401

    import bfpo.train  # noqa: F401

    models = a.models or (["tiny"] if a.quick else ["smollm2-135m", "tiny"])
    plan = {"smollm2-135m": (1, 3), "tiny": (2, 8)}
    if a.quick:
        plan = {m: (1, 3) for m in MODELS}
    configs = [c for c in CONFIGS if not a.configs or c["name"] in a.configs]
    skipped = {c["name"]: skip_reason(c) for c in configs if skip_reason(c)}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    configs = [c for c in configs if c["name"] not in skipped]
    roofline = in_child(measure_roofline, 0.5 if a.quick else 2.0)
    results = []
    t_start = time.perf_counter()
    for size in models:
        warmup, steps = plan.get(size, (1, 2))
        warmup = a.warmup if a.warmup is not None else warmup
        steps = a.steps if a.steps is not None else steps
        for cfg in configs:
            t0 = time.perf_counter()
            try:
                r = in_child(run_config, cfg, size, warmup, steps)
            except RuntimeError as e:
                raise SystemExit(f"benchmark config {cfg['name']} on {size} failed:\n{e}") from None
            r["achieved_vs_roofline_bf16"] = r["achieved_flops"] / roofline["bfloat16"]
            results.append(r)
            print(
                f"{size:>13} {cfg['name']:<28} {r['tokens_per_s']:9.1f} tok/s  {r['step_s']:7.3f} s/step  "
                f"{r['peak_rss_mb']:8.1f} MB  {r['achieved_flops'] / 1e9:7.1f} GFLOP/s  "
                f"pad {r['padding_fraction']:.0%}  ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    out = {
        "configs": results,
        "skipped": skipped,
        "ratios_vs_trl": ratios(results),
        "machine": machine_info(roofline),
        "settings": {
            "pairs_per_step": N_PAIRS,
            "seq_len_range": [MIN_LEN, MAX_LEN],
            "prompt_len_range": [MIN_PROMPT, MAX_PROMPT],
            "bf16_autocast": True,
            "gradient_checkpointing": False,
            "optimizer": "AdamW (Trainer default)",
            "plan": {m: list(plan[m]) for m in models},
            "quick": a.quick,
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "wall_s": time.perf_counter() - t_start,
        },
    }
    out["machine"]["torch_threads"] = in_child(torch.get_num_threads)
    os.makedirs(os.path.dirname(os.path.abspath(a.output_file)), exist_ok=True)
    with open(a.output_file, "w") as f:
        json.dump(out, f, indent=1)
    for name, r in out["ratios_vs_trl"].items():
        print(f"{name:<50} vs {r['vs']:<18} tokens/s x{r['tokens_per_s']:.2f}  peak RSS x{r['peak_rss']:.2f}")
    return out


if __name__ == "__main__":
    main()
