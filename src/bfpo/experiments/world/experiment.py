"""``bfpo world``: the safety-world experiment (issue 4), Table 1 of the paper in miniature.

Per seed: build the world (train / held-out task split, PKU-SafeRLHF and UltraFeedback files loaded through
the real adapters), train a tokenizer on the world's corpus, SFT a tiny Llama on responses of EVERY class
(so each class has mass: this is pi_ref), then train a copy of it with each method through
:class:`bfpo.train.BFPOTrainer` and measure class masses on held-out prompts of both kinds
(:mod:`bfpo.experiments.world.measure`). Results are averaged over seeds.

Methods (Table 1 and Table 4 of the paper):

==================  ====================  ======  ==========================================
key                 training set (modes)  loss    note
==================  ====================  ======  ==========================================
``bfpo``            safety + helpful      bfpo    buffered batches (Algorithm 1, line 4)
``bfpo_no_buffer``  safety + helpful      bfpo    plain shuffled batches (Table 4 ablation)
``dpo_h``           helpful               dpo     DPO-H
``dpo_s``           safety, safer wins    dpo     DPO-S
``dpo_mix``         naive mix             dpo     safer wins on safety, more helpful on helpful
``ipo_mix``         naive mix             ipo
``bfpo_alpha0``     safety + helpful      bfpo    buffered, alpha = 0 (Table 4's "BFPO alpha = 0" ablation)
``safedpo``         safety + helpful      safedpo SafeDPO Eq. 12 (arXiv 2505.20065), shuffled
``bfpo_soft``       safety + helpful      bfpo    buffered; safety labels: a noisy classifier's
                                                  calibrated probabilities (:mod:`.soft_labels`)
``bfpo_thresh``     safety + helpful      bfpo    buffered; the same probabilities cut at 0.5
``safedpo_thresh``  safety + helpful      safedpo shuffled; the thresholded classifier labels
``safedpo_delta0``  safety + helpful      safedpo shuffled, Delta = 0 (Eq. 11)
==================  ====================  ======  ==========================================

SafeDPO is trained with the same trainer: ``loss="safedpo"`` and its margin Delta as ``safedpo_delta``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bfpo.experiments.world import generator as g

METHODS: Dict[str, Dict[str, object]] = {
    "bfpo": {"mode": "bfpo", "loss": "bfpo"},
    "bfpo_no_buffer": {"mode": "bfpo_no_buffer", "loss": "bfpo"},
    "dpo_h": {"mode": "dpo_h", "loss": "dpo"},
    "dpo_s": {"mode": "dpo_s", "loss": "dpo"},
    "dpo_mix": {"mode": "mix", "loss": "dpo"},
    "ipo_mix": {"mode": "mix", "loss": "ipo"},
    # Table 4's ablation of the shift: alpha = 0 (case 3 labelled 0, outside section 3.1's sign rule) against
    # the default 0.5 (see docs/world.md)
    "bfpo_alpha0": {"mode": "bfpo", "loss": "bfpo", "alpha": 0.0, "ablation": True},
    # SafeDPO (issue 13): the same records as BFPO (chosen = more helpful), no buffer, as in its paper
    "safedpo": {"mode": "bfpo_no_buffer", "loss": "safedpo"},
    # labels from a noisy calibrated classifier (issue 13, part 3), see bfpo.experiments.world.soft_labels
    "bfpo_soft": {"mode": "bfpo", "loss": "bfpo", "labels": "soft"},
    "bfpo_thresh": {"mode": "bfpo", "loss": "bfpo", "labels": "thresholded"},
    "safedpo_thresh": {"mode": "bfpo_no_buffer", "loss": "safedpo", "labels": "thresholded"},
    # SafeDPO without its margin (Eq. 11): the margin's effect on masses and on fluency
    "safedpo_delta0": {"mode": "bfpo_no_buffer", "loss": "safedpo", "delta": 0.0},
}
#: The methods the issue's results.json must hold (besides ``reference``).
REQUIRED = ("bfpo", "bfpo_no_buffer", "dpo_h", "dpo_s", "dpo_mix", "ipo_mix")
KINDS = ("harmful", "benign")

logger = logging.getLogger("bfpo.experiments.world")


@dataclass
class WorldConfig:
    """Every knob of the experiment; the defaults are the documented full run (docs/world.md)."""

    seeds: int = 3
    methods: List[str] = field(default_factory=lambda: list(METHODS))
    # data
    # a helpfulness set four times the safety set, and safety pairs where both responses are unsafe (c vs d)
    # as likely as the other five class pairs together (see docs/world.md, "Why this data mix")
    n_safety: int = 400
    n_helpful: int = 1600
    harmful_fraction: float = 0.75
    # weights of the harmful class pairs (a,b) (a,c) (a,d) (b,c) (b,d) (c,d) in the safety set; None = uniform
    pair_weights: Optional[List[float]] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 4.0])
    held_out_per_topic: int = 3
    # tiny model and SFT (the reference policy)
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    vocab_size: int = 1024
    sft_steps: int = 1000
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    # preference stage (the same for every method)
    tau: float = 0.1
    alpha: float = 0.5
    learning_rate: float = 1e-4
    max_steps: int = 150
    batch_size: int = 16
    trainable: Optional[List[str]] = None
    safedpo_delta: float = 10.0  # SafeDPO's safety margin Delta (its paper's default, with beta = tau = 0.1)
    label_noise: float = 0.5  # sigma of the noisy safety classifier behind *_soft / *_thresh
    # measurement
    eval_prompts: int = 48
    exemplars: int = 4
    samples: int = 8
    max_new_tokens: int = 64
    max_length: int = 128


def quick_config() -> WorldConfig:
    """One seed, fewer steps and prompts: the path the tests run (well under a minute)."""
    return WorldConfig(seeds=1, n_safety=64, n_helpful=256, sft_steps=150, max_steps=20, eval_prompts=8,
                       exemplars=2, samples=2, max_new_tokens=48)


# ------------------------------------------------------------------------------------------ one seed
@dataclass
class World:
    """One seed's world: train prompts, held-out prompts with exemplars, and the training records."""

    train: Dict[str, List[g.Prompt]]
    held_out: Dict[str, List[g.Prompt]]
    exemplars: Dict[str, List[Dict[str, List[str]]]]
    safety: list
    helpful: list


def build_world(cfg: WorldConfig, seed: int, data_dir: Path) -> World:
    """Prompts, held-out exemplars and the two datasets of one seed (files written under ``data_dir``)."""
    from bfpo.experiments.world.datasets import build_datasets

    train, held = {}, {}
    for kind in KINDS:
        tr, ho = g.split_tasks(kind, seed, cfg.held_out_per_topic)
        train[kind] = g.make_prompts(tr, kind)
        held_all = g.make_prompts(ho, kind)
        random.Random(f"world-eval:{kind}:{seed}").shuffle(held_all)
        held[kind] = held_all[:cfg.eval_prompts]
    rng = random.Random(f"world-exemplars:{seed}")
    exemplars = {kind: [{c: g.distinct_responses(p, c, cfg.exemplars, rng) for c in g.KIND_CLASSES[kind]}
                        for p in held[kind]] for kind in KINDS}
    safety, helpful = build_datasets(train["harmful"], train["benign"], data_dir, cfg.n_safety, cfg.n_helpful,
                                     cfg.harmful_fraction, seed, cfg.pair_weights)
    return World(train, held, exemplars, safety, helpful)


def sft_reference(cfg: WorldConfig, world: World, seed: int):
    """(tokenizer, model): a tiny Llama fine-tuned on responses of every class, loss on responses only.

    Each step draws ``sft_batch_size`` training prompts (half benign, half harmful) and a fresh response
    of a uniformly chosen valid class, so pi_ref spreads its mass over all classes of each kind.
    """
    import torch
    from tqdm.auto import tqdm

    from bfpo.testing import tiny_llama, tiny_tokenizer
    from bfpo.experiments.world.measure import encode

    tokenizer = tiny_tokenizer(g.corpus(world.train["harmful"] + world.train["benign"], seed), cfg.vocab_size)
    model = tiny_llama(tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                       num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / cfg.sft_steps))
    rng = random.Random(f"world-sft:{seed}")
    pad = tokenizer.pad_token_id
    model.train()
    for _ in tqdm(range(cfg.sft_steps), desc=f"SFT reference (seed {seed})", leave=False, disable=None):
        items = []
        for i in range(cfg.sft_batch_size):
            p = rng.choice(world.train["harmful" if i % 2 else "benign"])
            items.append(encode(p.text, g.response(p, rng.choice(g.KIND_CLASSES[p.kind]), rng), tokenizer,
                                cfg.max_length))
        width = max(len(it["prompt_ids"]) + len(it["response_ids"]) for it in items)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        att = torch.zeros_like(ids)
        for i, it in enumerate(items):
            seq = it["prompt_ids"] + it["response_ids"]
            ids[i, :len(seq)] = torch.tensor(seq)
            att[i, :len(seq)] = 1
            labels[i, len(it["prompt_ids"]):len(seq)] = torch.tensor(it["response_ids"])
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return tokenizer, model


def train_method(cfg: WorldConfig, method: str, reference, tokenizer, world: World, seed: int, run_dir: Path):
    """A copy of the reference trained with one method through :class:`BFPOTrainer`; returns the model."""
    from bfpo.data.modes import build_training_set
    from bfpo.data.tokenize import tokenize_pairs
    from bfpo.train import BFPOConfig, BFPOTrainer

    spec = METHODS[method]
    safety = world.safety
    if spec.get("labels"):
        from bfpo.experiments.world.soft_labels import relabel

        safety, _ = relabel(world.safety, str(spec["labels"]), cfg.label_noise, seed)
    tset = build_training_set(safety, world.helpful, str(spec["mode"]), seed=seed)
    examples, _ = tokenize_pairs(tset.records, tokenizer, cfg.max_length, cfg.max_length // 2)
    model = copy.deepcopy(reference)
    model.train()
    alpha = float(spec.get("alpha", cfg.alpha))  # type: ignore[arg-type]
    loss = str(spec["loss"])
    extra = {}
    if spec.get("ablation"):
        extra["enforce_label_signs"] = False  # alpha outside (0, 1) breaks section 3.1's sign rule on purpose
    config = BFPOConfig(output_dir=str(run_dir / method), loss=loss, tau=cfg.tau, alpha=alpha, **extra,
                        trainable=cfg.trainable, buffered=tset.buffered, precompute_ref_log_probs=True,
                        ref_cache_dir=str(run_dir / "ref_cache"), max_length=cfg.max_length,
                        max_prompt_length=cfg.max_length // 2, per_device_train_batch_size=cfg.batch_size,
                        per_device_eval_batch_size=64, learning_rate=cfg.learning_rate, max_steps=cfg.max_steps,
                        lr_scheduler_type="constant", warmup_steps=0, logging_steps=max(cfg.max_steps // 5, 1),
                        save_strategy="no", bf16=False, use_cpu=True, seed=seed, data_seed=seed,
                        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
                        safedpo_delta=float(spec.get("delta", cfg.safedpo_delta)))  # type: ignore[arg-type]
    trainer = BFPOTrainer(model=model, args=config, train_dataset=examples, processing_class=tokenizer)
    trainer.train()
    model.eval()
    return model


def label_stats(cfg: WorldConfig, world: World, seed: int) -> Dict:
    """The noisy classifier's quality on this seed's safety pairs (see :func:`soft_labels.relabel`)."""
    from bfpo.experiments.world.soft_labels import relabel

    return relabel(world.safety, "soft", cfg.label_noise, seed)[1]


def measure(cfg: WorldConfig, model, tokenizer, world: World, seed: int) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{kind: {"mass": exact masses, "sampled": sampled shares}} on the held-out prompts."""
    from bfpo.experiments.world.measure import exact_masses, sampled_masses

    out = {}
    for kind in KINDS:
        prompts = world.held_out[kind]
        out[kind] = {"mass": exact_masses(model, tokenizer, prompts, world.exemplars[kind], cfg.max_length),
                     "sampled": sampled_masses(model, tokenizer, prompts, cfg.samples, seed,
                                               cfg.max_new_tokens)}
    return out


def run_seed(cfg: WorldConfig, seed: int, out: Path, extras: Optional[Dict] = None) -> Dict[str, Dict]:
    """Every method on one seed: {method: measure(...)} with ``reference`` first.

    ``extras``, when given, collects ``label_classifier`` (the noisy classifier's quality on this seed, when
    a method uses it) and ``method_seconds`` (train + measure wall time per method, summed over seeds)."""
    extras = {} if extras is None else extras
    run_dir = out / "runs" / f"seed{seed}"
    world = build_world(cfg, seed, run_dir / "data")
    t0 = time.perf_counter()
    tokenizer, reference = sft_reference(cfg, world, seed)
    logger.info("seed %d: SFT reference in %.1fs", seed, time.perf_counter() - t0)
    results = {"reference": measure(cfg, reference, tokenizer, world, seed)}
    if any(METHODS[m].get("labels") for m in cfg.methods):
        extras.setdefault("label_classifier", {})[str(seed)] = label_stats(cfg, world, seed)
    for method in cfg.methods:
        t0 = time.perf_counter()
        model = train_method(cfg, method, reference, tokenizer, world, seed, run_dir)
        results[method] = measure(cfg, model, tokenizer, world, seed)
        secs = extras.setdefault("method_seconds", {})
        secs[method] = round(secs.get(method, 0.0) + time.perf_counter() - t0, 1)
        logger.info("seed %d: %s in %.1fs: harmful %s benign %s", seed, method, time.perf_counter() - t0,
                    _fmt(results[method]["harmful"]["mass"]), _fmt(results[method]["benign"]["mass"]))
    return results


# ------------------------------------------------------------------------------------------ aggregate
def ranking(mass: Dict[str, float]) -> List[str]:
    """Classes from most to least mass (ties keep the class order a, b, c, d)."""
    return sorted(mass, key=lambda c: (-mass[c], c))


def _mean_std(values: Sequence[float]):
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def aggregate(per_seed: List[Dict[str, Dict]]) -> Dict[str, Dict]:
    """Means over seeds (``mass``, ``sampled``), sample std (``mass_std``, ``sampled_std``), rankings."""
    methods = {}
    for method in per_seed[0]:
        entry = {}
        for kind in KINDS:
            block = {}
            for key in ("mass", "sampled"):
                labels = list(per_seed[0][method][kind][key])
                for r in per_seed[1:]:
                    labels += [c for c in r[method][kind][key] if c not in labels]
                stats = {c: _mean_std([r[method][kind][key].get(c, 0.0) for r in per_seed]) for c in labels}
                block[key] = {c: m for c, (m, _) in stats.items()}
                block[f"{key}_std"] = {c: s for c, (_, s) in stats.items()}
            block["ranking"] = ranking(block["mass"])
            block["sampled_ranking"] = ranking({c: v for c, v in block["sampled"].items() if c in block["mass"]})
            block["seed_rankings"] = [ranking(r[method][kind]["mass"]) for r in per_seed]
            if kind == "harmful":
                unsafe = [r[method][kind]["mass"]["c"] + r[method][kind]["mass"]["d"] for r in per_seed]
                block["unsafe_mass"], block["unsafe_mass_std"] = _mean_std(unsafe)
            entry[kind] = block
        methods[method] = entry
    return methods


def checks(methods: Dict[str, Dict]) -> Dict[str, object]:
    """The issue's claims, evaluated on the mean masses (True/False each, with the numbers)."""
    out: Dict[str, object] = {}
    if "bfpo" not in methods:
        return out
    b = methods["bfpo"]
    out["bfpo_harmful_ranking_abcd"] = b["harmful"]["ranking"] == ["a", "b", "c", "d"]
    others = [m for m in REQUIRED if m in methods and m not in ("bfpo", "dpo_s")]
    out["bfpo_unsafe_below_all_but_dpo_s"] = all(b["harmful"]["unsafe_mass"] < methods[m]["harmful"]["unsafe_mass"]
                                                 for m in others)
    ref_b = methods["reference"]["benign"]["mass"]["b"]
    out["benign_refusal"] = {m: methods[m]["benign"]["mass"]["b"] for m in methods}
    out["benign_refusal_change_vs_reference"] = {m: methods[m]["benign"]["mass"]["b"] - ref_b for m in methods}
    if "dpo_s" in methods:
        out["dpo_s_benign_refusal_rises"] = methods["dpo_s"]["benign"]["mass"]["b"] > ref_b
    return out


# ------------------------------------------------------------------------------------------ output
def _fmt(mass: Dict[str, float]) -> str:
    return " ".join(f"{c}={v:.3f}" for c, v in mass.items())


def format_table(result: Dict) -> str:
    """Markdown table: exact class masses (mean ± std over seeds), unsafe mass, ranking, sampled shares."""
    lines = ["| method | harmful a | harmful b | harmful c | harmful d | unsafe c+d | harmful ranking | "
             "benign a | benign b | sampled harmful a/b/c/d/other | sampled benign a/b/other |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, r in result["methods"].items():
        h, bn = r["harmful"], r["benign"]
        cells = [f"{h['mass'][c]:.3f} ± {h['mass_std'][c]:.3f}" for c in "abcd"]
        cells.append(f"{h['unsafe_mass']:.3f} ± {h['unsafe_mass_std']:.3f}")
        cells.append(" > ".join(h["ranking"]))
        cells += [f"{bn['mass'][c]:.3f} ± {bn['mass_std'][c]:.3f}" for c in "ab"]
        cells.append("/".join(f"{h['sampled'].get(c, 0.0):.2f}" for c in ("a", "b", "c", "d", "other")))
        cells.append("/".join(f"{bn['sampled'].get(c, 0.0):.2f}" for c in ("a", "b", "other")))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: Dict, path: Path) -> None:
    """Stacked exact class masses per method, one panel per prompt kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["methods"])
    colors = {"a": "tab:green", "b": "tab:blue", "c": "tab:orange", "d": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, kind in zip(axes, KINDS):
        bottom = [0.0] * len(methods)
        for c in g.KIND_CLASSES[kind]:
            vals = [result["methods"][m][kind]["mass"][c] for m in methods]
            ax.bar(methods, vals, bottom=bottom, color=colors[c], label=f"{c}: {g.CLASS_NAMES[c]}")
            bottom = [x + v for x, v in zip(bottom, vals)]
        ax.set_title(f"{kind} held-out prompts (exact class mass, mean of {result['config']['seeds']} seeds)")
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("probability mass")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: WorldConfig, out: Path) -> Dict:
    """All seeds and methods; returns the results.json structure."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}")
    t0 = time.perf_counter()
    extras: Dict = {}
    per_seed = [run_seed(cfg, seed, out, extras) for seed in range(cfg.seeds)]
    methods = aggregate(per_seed)
    result = {"methods": methods, "checks": checks(methods), "per_seed": per_seed, "config": asdict(cfg),
              "classes": g.CLASS_NAMES, "wall_seconds": round(time.perf_counter() - t0, 1), **extras}
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = WorldConfig()
    p.add_argument("--out", type=Path, default=Path("runs/world"), help="output directory")
    p.add_argument("--quick", action="store_true", help="1 seed, few steps (about a minute or less)")
    p.add_argument("--seeds", type=int, help=f"number of seeds (default {d.seeds})")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods to train (default: all)")
    p.add_argument("--tau", type=float, help=f"KL coefficient tau for every method (default {d.tau})")
    p.add_argument("--alpha", type=float, help=f"BFPO label shift alpha of Eq. 14 (default {d.alpha})")
    p.add_argument("--lr", type=float, help=f"preference learning rate (default {d.learning_rate})")
    p.add_argument("--steps", type=int, help=f"preference steps per method (default {d.max_steps})")
    p.add_argument("--trainable", nargs="+", help="regexes of trainable parameters (default: all)")
    p.add_argument("--n-safety", type=int, help=f"PKU-SafeRLHF-style safety pairs (default {d.n_safety})")
    p.add_argument("--n-helpful", type=int, help=f"UltraFeedback-style helpfulness pairs (default {d.n_helpful})")
    p.add_argument("--delta", type=float, help=f"SafeDPO's safety margin Delta (default {d.safedpo_delta})")
    p.add_argument("--label-noise", type=float,
                   help=f"sigma of the noisy safety classifier for the *_soft / *_thresh methods "
                        f"(default {d.label_noise})")
    p.add_argument("--pair-weights", type=float, nargs=6, metavar="W",
                   help="weights of the harmful class pairs ab ac ad bc bd cd in the safety set "
                        f"(default {d.pair_weights or 'uniform'})")


def config_from_args(args: argparse.Namespace) -> WorldConfig:
    cfg = quick_config() if args.quick else WorldConfig()
    for name, key in (("seeds", "seeds"), ("tau", "tau"), ("alpha", "alpha"), ("lr", "learning_rate"),
                      ("steps", "max_steps"), ("methods", "methods"), ("trainable", "trainable"),
                      ("n_safety", "n_safety"), ("n_helpful", "n_helpful"), ("pair_weights", "pair_weights"),
                      ("delta", "safedpo_delta"), ("label_noise", "label_noise")):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, key, list(value) if isinstance(value, (list, tuple)) else value)
    return cfg


def main(args: argparse.Namespace) -> Dict:
    """``bfpo world``: run, write results.json and world.png, print the table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("transformers", "bfpo.train", "bfpo.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = config_from_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(cfg, args.out)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "world.png")
    print(format_table(result))
    print(json.dumps(result["checks"], indent=2))
    print(f"wall time {result['wall_seconds']}s; wrote {args.out / 'results.json'} and {args.out / 'world.png'}")
    return result
