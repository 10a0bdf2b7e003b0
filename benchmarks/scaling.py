"""How the cost of a training step grows with sequence length and batch size (issue 15, part 2).

    python benchmarks/scaling.py --output_file benchmarks/results/scaling_cpu_2core.json # full sweep, ~15 min
    python benchmarks/scaling.py --dry_run --output_file /tmp/scaling.json          # tiny model, 2 points each
    python benchmarks/scaling.py --table benchmarks/results/scaling_cpu_2core.json  # the markdown tables
    python benchmarks/scaling.py --replot benchmarks/results/scaling_cpu_2core.json # refit and redraw, no measuring

Both trainers (bfpo's BFPOTrainer, TRL's DPOTrainer) train the paper recipe's layers (only ``down_proj``
trainable, reference log-probs precomputed, bf16 autocast, AdamW) on synthetic pairs, one optimizer step per
batch, at every point of two sweeps that cross at (1024 tokens, 4 pairs):

* sequence length: at most 256, 512, 1024, 2048 tokens per sequence (prompt+response drawn in [L/2, L]),
  4 pairs (8 sequences) per step;
* batch size: 2, 4, 8 pairs per step at L = 1024.

Every point runs in its own forked child (as ``train_step.py`` does), which reports tokens/s (real tokens of
chosen+rejected over the median step time after warm-up) and peak memory (``ru_maxrss``; on a GPU also
``torch.cuda.max_memory_allocated``). The model is SmolLM2-135M's width, heads and 49,152-token vocabulary
with 4 of its 30 layers, so the vocabulary is a large share of the per-token cost: a (batch x seq x vocab)
term would add ~192 KB per token (one fp32 row of logits), about as much as 4 layers' activations. A control
series runs bfpo on the same model with an 8,192-token vocabulary: without a vocabulary term its memory
slope per token is the same.

For each series a least-squares line ``peak = a + b * tokens`` is fitted (and for TRL also against padded
positions, which is what its batch holds); ``b`` is the memory per token, R^2 says how linear it is.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _ts():
    """``train_step`` (imports torch and transformers): only measuring needs it, not --table or --replot."""
    import train_step

    return train_step


TRAINERS = {
    "bfpo": dict(
        name="bfpo_down_proj_precomputed",
        trainer="bfpo",
        trainable=["down_proj"],
        precompute=True,
        bfpo_args={"padding_free": True},
    ),
    "trl": dict(name="trl_ipo_down_proj", trainer="trl", trainable=["down_proj"], precompute=True),
}
SEQ_LENS = (256, 512, 1024, 2048)
BATCHES = (2, 4, 8)
SEQ_SWEEP_PAIRS, BATCH_SWEEP_LEN = 4, 1024
MODEL, CONTROL_MODEL = "smollm2-135m-4l", "smollm2-135m-4l-v8k"


def plan(dry_run: bool = False) -> List[Dict[str, Any]]:
    """The sweep's points: (series, trainer, model, max_len, pairs)."""
    if dry_run:
        seq_lens, batches, cross, model, control = (32, 64), (2, 4), (64, 2), "tiny", "tiny"
    else:
        seq_lens, batches, cross = SEQ_LENS, BATCHES, (BATCH_SWEEP_LEN, SEQ_SWEEP_PAIRS)
        model, control = MODEL, CONTROL_MODEL
    points = []
    for trainer in TRAINERS:
        for L in seq_lens:
            points.append(
                dict(series=trainer, sweep="seq_len", trainer=trainer, model=model, max_len=L, pairs=cross[1])
            )
        for b in batches:
            if b != cross[1]:
                points.append(
                    dict(series=trainer, sweep="batch", trainer=trainer, model=model, max_len=cross[0], pairs=b)
                )
    for L in seq_lens:  # the vocabulary control: bfpo, 6x smaller vocabulary, the sequence-length sweep
        points.append(
            dict(series="bfpo_vocab8k", sweep="seq_len", trainer="bfpo", model=control, max_len=L, pairs=cross[1])
        )
    return points


def linear_fit(x: Sequence[float], y: Sequence[float]) -> Dict[str, float]:
    """Least-squares ``y = intercept + slope * x`` and its R^2 (1.0 when y is constant and fitted exactly)."""
    n = len(x)
    if n < 2:
        raise ValueError("a line needs at least two points")
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        raise ValueError("all x are equal")
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    intercept = my - slope * mx
    ss_res = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y))
    ss_tot = sum((b - my) ** 2 for b in y)
    return {"intercept": intercept, "slope": slope, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def fits(points: List[Dict[str, Any]], memory_key: str = "peak_rss_mb") -> Dict[str, Dict[str, Any]]:
    """Per series: memory against real tokens (and padded positions), in MB and KB per token."""
    out: Dict[str, Dict[str, Any]] = {}
    for series in dict.fromkeys(p["series"] for p in points):
        pts = [p for p in points if p["series"] == series and p.get(memory_key) is not None]
        if len({p["tokens_per_step"] for p in pts}) < 2:
            continue
        y = [p[memory_key] for p in pts]
        entry = {"memory": memory_key, "points": len(pts)}
        for x_key in ("tokens_per_step", "positions_per_step"):
            f = linear_fit([p[x_key] for p in pts], y)
            entry[x_key] = {**f, "kb_per_unit": f["slope"] * 1024.0}
        out[series] = entry
    return out


def run_point(point: Dict[str, Any], warmup: int, steps: int) -> Dict[str, Any]:
    ts = _ts()
    cfg = TRAINERS[point["trainer"]]
    r = ts.run_config(
        cfg, point["model"], warmup, steps, n_pairs=point["pairs"], lengths=ts.length_spec(point["max_len"])
    )
    return {
        **point,
        **{
            k: r[k]
            for k in (
                "tokens_per_step",
                "positions_per_step",
                "response_tokens_per_step",
                "padding_fraction",
                "tokens_per_s",
                "step_s",
                "step_s_all",
                "setup_s",
                "peak_rss_mb",
                "peak_cuda_mb",
                "trainable_params",
            )
        },
        "positions_per_s": r["positions_per_step"] / r["step_s"],
    }


def plot(res: Dict[str, Any], out_dir: str, stem: str) -> List[str]:
    from bfpo.figures import save_figure, subplots

    pts = res["points"]
    colors = {"bfpo": "tab:blue", "trl": "tab:red", "bfpo_vocab8k": "tab:cyan"}
    labels = {"bfpo": "bfpo BFPOTrainer", "trl": "TRL DPOTrainer", "bfpo_vocab8k": "bfpo, vocab 8192 (control)"}
    mem_keys = ["peak_rss_mb"] + (["peak_cuda_mb"] if any(p.get("peak_cuda_mb") for p in pts) else [])
    paths = []
    panels = [(k, x) for k in mem_keys for x in ("tokens_per_step", "positions_per_step")]
    fig, axes = subplots(1, len(panels), figsize=(6.5 * len(panels), 5.0), squeeze=False)
    for ax, (key, xkey) in zip(axes[0], panels):
        for series in dict.fromkeys(p["series"] for p in pts):
            sp = [p for p in pts if p["series"] == series]
            for sweep, marker in (("seq_len", "o"), ("batch", "s")):
                q = [p for p in sp if p["sweep"] == sweep]
                if q:
                    ax.scatter(
                        [p[xkey] for p in q],
                        [p[key] / 1024 for p in q],
                        marker=marker,
                        color=colors.get(series),
                        label=f"{labels.get(series, series)} ({sweep} sweep)",
                    )
            f = res["fits"].get(key, {}).get(series)
            if f and xkey == "tokens_per_step":
                xs = [min(p[xkey] for p in sp), max(p[xkey] for p in sp)]
                t = f[xkey]
                ax.plot(
                    xs,
                    [(t["intercept"] + t["slope"] * x) / 1024 for x in xs],
                    color=colors.get(series),
                    lw=1,
                    label=f"least squares: {t['kb_per_unit']:.0f} KB/token, R2 {t['r2']:.3f}",
                )
            elif xkey == "positions_per_step":  # joined in order: where the growth bends
                q = sorted(sp, key=lambda p: p[xkey])
                ax.plot([p[xkey] for p in q], [p[key] / 1024 for p in q], color=colors.get(series), lw=1)
        ax.set_xlabel(
            "real tokens per optimizer step (chosen + rejected)"
            if xkey == "tokens_per_step"
            else "positions per step the model computes (padded rows for TRL, packed for bfpo)"
        )
        ax.set_ylabel({"peak_rss_mb": "peak RSS (GiB)", "peak_cuda_mb": "peak CUDA memory (GiB)"}[key])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Peak memory against tokens per step ({res['settings']['model']}, down_proj trainable)")
    paths.append(str(save_figure(fig, os.path.join(out_dir, f"{stem}_memory.png"), dpi=110)))

    fig, axes = subplots(1, 2, figsize=(12, 4.4))
    for ax, sweep, xkey, xlabel in (
        (axes[0], "seq_len", "max_len", "max tokens per sequence (L)"),
        (axes[1], "batch", "pairs", "pairs per optimizer step"),
    ):
        for series in dict.fromkeys(p["series"] for p in pts):
            if not any(p["series"] == series and p["sweep"] == sweep for p in pts):
                continue
            q = sorted(
                (
                    p
                    for p in pts
                    if p["series"] == series
                    and (
                        p["sweep"] == sweep
                        or (
                            sweep == "batch"
                            and p["max_len"] == res["settings"]["cross"][0]
                            and p["pairs"] == res["settings"]["cross"][1]
                        )
                    )
                ),
                key=lambda p: p[xkey],
            )
            if q:
                ax.plot(
                    [p[xkey] for p in q],
                    [p["tokens_per_s"] for p in q],
                    "o-",
                    color=colors.get(series),
                    label=labels.get(series, series),
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("tokens/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training throughput")
    paths.append(str(save_figure(fig, os.path.join(out_dir, f"{stem}_throughput.png"), dpi=110)))
    return paths


def markdown(res: Dict[str, Any]) -> str:
    from bfpo.figures import markdown_table

    cuda = any(p.get("peak_cuda_mb") for p in res["points"])
    rows = [
        [
            p["series"],
            p["sweep"],
            p["max_len"],
            p["pairs"],
            p["tokens_per_step"],
            p["positions_per_step"],
            f"{p['tokens_per_s']:.0f}",
            f"{p['step_s']:.2f}",
            f"{p['peak_rss_mb']:.0f}",
        ]
        + ([f"{p['peak_cuda_mb']:.0f}" if p.get("peak_cuda_mb") else ""] if cuda else [])
        for p in res["points"]
    ]
    header = [
        "series",
        "sweep",
        "L",
        "pairs",
        "tokens/step",
        "padded positions",
        "tokens/s",
        "s/step",
        "peak RSS (MB)",
    ] + (["peak CUDA (MB)"] if cuda else [])
    fits = [
        [
            key,
            series,
            f"{f['tokens_per_step']['intercept']:.0f}",
            f"{f['tokens_per_step']['kb_per_unit']:.1f}",
            f"{f['tokens_per_step']['r2']:.3f}",
            f"{f['positions_per_step']['kb_per_unit']:.1f}",
            f"{f['positions_per_step']['r2']:.3f}",
        ]
        for key, per in res["fits"].items()
        for series, f in per.items()
    ]
    return "\n".join(
        [
            markdown_table(header, rows, align="ll" + "r" * (len(header) - 2)),
            "",
            markdown_table(
                ["memory", "series", "MB at 0 tokens", "KB per real token", "R^2", "KB per padded position", "R^2"],
                fits,
                align="llrrrrr",
            ),
        ]
    )


def finish(res: Dict[str, Any], path: str) -> Dict[str, Any]:
    """Fit every memory series, draw the plots next to ``path``, write the results there and print the tables."""
    mem_keys = ["peak_rss_mb"] + (["peak_cuda_mb"] if any(r.get("peak_cuda_mb") for r in res["points"]) else [])
    res["fits"] = {k: fits(res["points"], k) for k in mem_keys}
    out_dir = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    res["plots"] = [os.path.relpath(x, out_dir) for x in plot(res, out_dir, stem)]
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(markdown(res))
    return res


@dataclass
class ScalingArguments:
    """Settings of benchmarks/scaling.py."""

    output_file: Optional[str] = field(
        default=None,
        metadata={"help": "results JSON; the plots go next to it as <stem>_memory.png, <stem>_throughput.png"},
    )
    table: Optional[str] = field(
        default=None, metadata={"help": "print the markdown tables of this results file and exit"}
    )
    replot: Optional[str] = field(
        default=None,
        metadata={"help": "recompute the fits and redraw the plots of this results file (no measurement) and exit"},
    )
    dry_run: bool = field(default=False, metadata={"help": "tiny model, short sequences, 1 measured step"})
    warmup: int = field(default=1, metadata={"help": "warm-up steps per point"})
    steps: Optional[int] = field(default=None, metadata={"help": "measured steps per point (default 2; --dry_run 1)"})
    only: Optional[List[str]] = field(
        default=None, metadata={"help": "only these series", "choices": ("bfpo", "trl", "bfpo_vocab8k")}
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "keep the points already in --output_file (it is rewritten after every point) and run the rest"
        },
    )

    def __post_init__(self):
        if not (self.output_file or self.table or self.replot):
            raise ValueError("--output_file is required (or --table / --replot RESULTS.json)")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    from bfpo.args import parse

    (a,) = parse([ScalingArguments], argv, prog="scaling.py", description=__doc__.split("\n")[0])
    if a.table:
        with open(a.table) as f:
            res = json.load(f)
        print(markdown(res))
        return res
    if a.replot:
        with open(a.replot) as f:
            return finish(json.load(f), a.replot)
    ts = _ts()
    import trl  # noqa: F401  (imported before forking, like torch)
    from trl import DPOTrainer  # noqa: F401

    import bfpo.train  # noqa: F401

    steps = a.steps if a.steps is not None else (1 if a.dry_run else 2)
    points = [q for q in plan(a.dry_run) if not a.only or q["series"] in a.only]
    results, t_start = [], time.perf_counter()
    key = ("series", "sweep", "model", "max_len", "pairs")
    if a.resume and os.path.exists(a.output_file):
        with open(a.output_file) as f:
            results = json.load(f)["points"]
        done = {tuple(r[k] for k in key) for r in results}
        points = [q for q in points if tuple(q[k] for k in key) not in done]
        print(f"resuming: {len(results)} points kept, {len(points)} to run", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.output_file)), exist_ok=True)
    for i, point in enumerate(points):
        t0 = time.perf_counter()
        try:
            r = ts.in_child(run_point, point, a.warmup, steps)
        except RuntimeError as e:
            raise SystemExit(f"scaling point {point} failed:\n{e}") from None
        results.append(r)
        with open(a.output_file, "w") as f:  # after every point, so a stopped sweep can be resumed
            json.dump({"points": results, "partial": True}, f, indent=1)
        cuda = f"  {r['peak_cuda_mb']:8.0f} MB CUDA" if r.get("peak_cuda_mb") else ""
        print(
            f"[{i + 1}/{len(points)}] {r['series']:<13} L={r['max_len']:<5} pairs={r['pairs']:<2} "
            f"{r['tokens_per_step']:6d} tok  {r['tokens_per_s']:8.1f} tok/s  {r['step_s']:7.2f} s/step  "
            f"{r['peak_rss_mb']:8.0f} MB{cuda}  ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    cross = (64, 2) if a.dry_run else (BATCH_SWEEP_LEN, SEQ_SWEEP_PAIRS)
    res = {
        "points": results,
        "machine": ts.machine_info({}),
        "settings": {
            "model": "tiny" if a.dry_run else MODEL,
            "control_model": "tiny" if a.dry_run else CONTROL_MODEL,
            "model_config": ts.MODELS["tiny" if a.dry_run else MODEL],
            "trainers": TRAINERS,
            "warmup": a.warmup,
            "steps": steps,
            "cross": list(cross),
            "seed": 0,
            "dry_run": a.dry_run,
            "lengths": "prompt+response uniform in [L/2, L], prompt in [3L/32, 3L/8]",
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "wall_s": time.perf_counter() - t_start,
            "resumed": a.resume,
        },
    }
    res["machine"].pop("roofline_flops", None)
    res["machine"]["torch_threads"] = ts.in_child(ts.torch.get_num_threads)
    return finish(res, a.output_file)


if __name__ == "__main__":
    main()
