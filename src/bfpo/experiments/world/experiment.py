"""``bfpo world``: the safety-world experiment (issue 4), Table 1 of the paper in miniature.

Per seed: build the world (train / held-out task split, PKU-SafeRLHF and UltraFeedback files loaded through
the real adapters), train a tokenizer on the world's corpus, SFT a tiny Llama on responses of EVERY class
(so each class has mass: this is pi_ref) with :func:`bfpo.train.sft.train_sft`, then train a copy of it with
each method through :func:`bfpo.train.run.train_preference` and measure class masses on held-out prompts of
both kinds (:mod:`bfpo.experiments.world.measure`). Results are averaged over seeds. The model folders are
``OUTPUT_DIR/runs/seed*/models/{sft,METHOD}``.

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
``morl``            their prompts         morl    TRL's RLOO on the world's exact rewards, beta = tau
==================  ====================  ======  ==========================================

SafeDPO is trained with the same trainer: ``loss="safedpo"`` and its margin Delta as ``safedpo_delta``. MORL
(the paper's RL baseline) samples responses to the training pairs' prompts and is rewarded by the global
reward g of Eq. 10 that BFPO's labels optimise (:mod:`bfpo.experiments.world.morl`), through
:func:`bfpo.train.morl.train_morl`. Every method's training wall time is recorded (``train_seconds``), and
each method's class masses are compared with the analytic MORL optimum ``pi_ref exp(g / tau) / Z``
(Theorem 3.2; ``theorem32`` in results.json).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bfpo.args import choices
from bfpo.experiments.settings import setting
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
    # MORL (issue 13): online RL (TRL's RLOO) with the world's exact rewards, the upper bound BFPO is compared to
    "morl": {"loss": "morl", "online": True},
}
#: The methods the issue's results.json must hold (besides ``reference``).
REQUIRED = ("bfpo", "bfpo_no_buffer", "dpo_h", "dpo_s", "dpo_mix", "ipo_mix")
KINDS = ("harmful", "benign")

logger = logging.getLogger("bfpo.experiments.world")


@dataclass
class WorldConfig:
    """Every knob of the experiment; the defaults are the documented full run (docs/world.md)."""

    seeds: List[int] = setting(
        "the seeds to run; each is its own world (held-out split, data, tokenizer, "
        "initialisation, training order); results are the mean and std over them",
        default_factory=lambda: [0, 1, 2],
    )
    methods: List[str] = choices(
        *METHODS, help="the methods to train (each from the same SFT reference)", default_factory=lambda: list(METHODS)
    )
    # data: a helpfulness set four times the safety set, and safety pairs where both responses are unsafe
    # (c vs d) as likely as the other five class pairs together (see docs/world.md, "Why this data mix")
    n_safety: int = setting("PKU-SafeRLHF-style safety pairs per seed", default=400)
    n_helpful: int = setting("UltraFeedback-style helpfulness pairs per seed", default=1600)
    harmful_fraction: float = setting(
        "share of the safety pairs on harmful prompts (the rest: benign a vs b)", default=0.75
    )
    pair_weights: Optional[List[float]] = setting(
        "weights of the harmful class pairs ab ac ad bc bd cd in the safety set (6 numbers; null = uniform)",
        default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 4.0],
    )
    held_out_per_topic: int = setting(
        "verb-object tasks per topic held out of training (evaluation prompts)", default=3
    )
    # tiny model and SFT (the reference policy)
    hidden_size: int = setting("hidden size of the tiny Llama", default=128)
    num_layers: int = setting("layers of the tiny Llama", default=2)
    num_heads: int = setting("attention heads of the tiny Llama", default=4)
    intermediate_size: int = setting("MLP size of the tiny Llama", default=256)
    vocab_size: int = setting("BPE vocabulary trained on the world's corpus", default=1024)
    sft_steps: int = setting("SFT steps of the reference policy (responses of every class)", default=1000)
    sft_batch_size: int = setting("SFT batch size (half benign, half harmful prompts)", default=32)
    sft_learning_rate: float = setting(
        "SFT learning rate (AdamW, 20 warm-up steps, linear decay to 10%%)", default=3e-3
    )
    # preference stage (the same for every method)
    tau: float = setting("KL coefficient tau of every method (DPO's beta)", default=0.1)
    alpha: float = setting("BFPO's label shift alpha (Eq. 14); bfpo_alpha0 uses 0", default=0.5)
    learning_rate: float = setting("preference learning rate (constant)", default=1e-4)
    max_steps: int = setting("preference steps per method", default=150)
    batch_size: int = setting("pairs per preference step", default=16)
    trainable: Optional[List[str]] = setting(
        "regexes of the parameters the preference stage trains (null = all)", default=None
    )
    safedpo_delta: float = setting(
        "SafeDPO's safety margin Delta (its paper's default, with beta = tau = 0.1); safedpo_delta0 uses 0",
        default=10.0,
    )
    label_noise: float = setting(
        "sigma of the noisy safety classifier behind the *_soft / *_thresh methods", default=0.5
    )
    morl_generations: int = setting(
        "morl: samples per prompt (RLOO's leave-one-out group); a step takes batch_size prompts", default=4
    )
    # measurement
    eval_prompts: int = setting("held-out prompts of each kind measured", default=48)
    exemplars: int = setting("held-out exemplars per class scored for the exact class masses", default=4)
    samples: int = setting("samples per prompt (temperature 1) for the sampled shares", default=8)
    max_new_tokens: int = setting("tokens per sample", default=64)
    max_length: int = setting("prompt + response tokens (the prompt gets at most half)", default=128)

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, at least one, got {self.seeds}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
        if self.pair_weights is not None and (
            len(self.pair_weights) != 6 or min(self.pair_weights) < 0 or sum(self.pair_weights) <= 0
        ):
            raise ValueError(
                f"pair_weights takes 6 weights >= 0 (ab ac ad bc bd cd), not all 0, got {self.pair_weights}"
            )
        if not 0.0 <= self.harmful_fraction <= 1.0:
            raise ValueError(f"harmful_fraction must be in [0, 1], got {self.harmful_fraction}")
        for name in (
            "n_safety",
            "n_helpful",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "vocab_size",
            "sft_steps",
            "sft_batch_size",
            "eval_prompts",
            "exemplars",
            "samples",
            "morl_generations",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.label_noise <= 0:
            raise ValueError(f"label_noise must be > 0, got {self.label_noise}")


#: ``--quick``: one seed, fewer steps and prompts (the path the tests run; well under a minute)
QUICK = {
    "seeds": [0],
    "n_safety": 64,
    "n_helpful": 256,
    "sft_steps": 150,
    "max_steps": 20,
    "eval_prompts": 8,
    "exemplars": 2,
    "samples": 2,
    "max_new_tokens": 48,
}


def quick_config() -> WorldConfig:
    """The ``--quick`` settings."""
    return replace(WorldConfig(), **QUICK)


@dataclass
class WorldRun:
    """Where the results go, and the preset."""

    output_dir: str = setting("output folder: results.json, world.png, runs/seed*/data", default="runs/world")
    quick: bool = setting(
        "1 seed, 64/256 pairs, 150 SFT steps, 20 steps per method (about a minute); settings "
        "given explicitly still win",
        default=False,
    )


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
        held[kind] = held_all[: cfg.eval_prompts]
    rng = random.Random(f"world-exemplars:{seed}")
    exemplars = {
        kind: [{c: g.distinct_responses(p, c, cfg.exemplars, rng) for c in g.KIND_CLASSES[kind]} for p in held[kind]]
        for kind in KINDS
    }
    safety, helpful = build_datasets(
        train["harmful"],
        train["benign"],
        data_dir,
        cfg.n_safety,
        cfg.n_helpful,
        cfg.harmful_fraction,
        seed,
        cfg.pair_weights,
    )
    return World(train, held, exemplars, safety, helpful)


def sft_examples(cfg: WorldConfig, world: World, seed: int, tokenizer) -> List[Dict[str, str]]:
    """The reference policy's SFT data: ``sft_steps x sft_batch_size`` prompt-completion rows as text.

    Row ``i`` of each batch-sized block is a benign (even ``i``) or harmful (odd) training prompt with a
    fresh response of a uniformly chosen valid class, so pi_ref spreads its mass over all classes of each
    kind. The prompt is rendered with the tokenizer's chat template (:func:`bfpo.data.tokenize.format_prompt`);
    TRL's ``SFTTrainer`` appends EOS to the completion, so the SFT token sequences are exactly the ones the
    preference stage and the measurement score (:func:`bfpo.experiments.world.measure.encode`).
    """
    from bfpo.data.tokenize import format_prompt

    rng = random.Random(f"world-sft:{seed}")
    rows = []
    for _ in range(cfg.sft_steps):
        for i in range(cfg.sft_batch_size):
            p = rng.choice(world.train["harmful" if i % 2 else "benign"])
            rows.append(
                {
                    "prompt": format_prompt(p.text, tokenizer),
                    "completion": g.response(p, rng.choice(g.KIND_CLASSES[p.kind]), rng),
                }
            )
    return rows


def sft_reference(cfg: WorldConfig, world: World, seed: int, run_dir: Path):
    """(tokenizer, model folder): a tiny Llama fine-tuned on responses of every class (loss on responses
    only) by :func:`bfpo.train.sft.train_sft` (TRL's ``SFTTrainer``), saved as ``run_dir/models/sft``.

    AdamW (no weight decay), 20 linear warm-up steps then linear decay, gradients clipped at norm 1, one pass
    over :func:`sft_examples` in a seeded shuffled order.
    """
    from trl import SFTConfig

    from bfpo.models.tiny import tiny_llama, tiny_tokenizer
    from bfpo.train.sft import train_sft

    tokenizer = tiny_tokenizer(g.corpus(world.train["harmful"] + world.train["benign"], seed), cfg.vocab_size)
    model = tiny_llama(
        tokenizer,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        seed=seed,
    )
    config = SFTConfig(
        output_dir=str(run_dir / "models" / "sft"),
        max_steps=cfg.sft_steps,
        per_device_train_batch_size=cfg.sft_batch_size,
        learning_rate=cfg.sft_learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=20,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=cfg.max_length,
        completion_only_loss=True,
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=max(cfg.sft_steps // 5, 1),
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    train_sft(
        None,
        config,
        examples=sft_examples(cfg, world, seed, tokenizer),
        model=model,
        tokenizer=tokenizer,
        card_title=f"bfpo world: SFT reference (seed {seed})",
    )
    return tokenizer, Path(config.output_dir)


def load_policy(model_dir: Path):
    """A model folder written by the driver, loaded in float32 for measuring. (Every stage starts from the
    folder, not from a ``copy.deepcopy`` of a model that went through ``SFTTrainer``: that model carries an
    instance-level ``forward`` wrapper whose copy still runs the original's weights.)"""
    from bfpo.train.config import ModelArguments
    from bfpo.train.model_io import load_model

    model = load_model(ModelArguments(model_name_or_path=str(model_dir)))
    model.eval()
    return model


def run_settings(cfg: WorldConfig, seed: int) -> Dict[str, object]:
    """The trainer settings every method shares (preference and online): constant learning rate, max_steps,
    CPU in float32, the seed, no checkpoints and no reporting."""
    return {
        "learning_rate": cfg.learning_rate,
        "max_steps": cfg.max_steps,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": max(cfg.max_steps // 5, 1),
        "save_strategy": "no",
        "bf16": False,
        "use_cpu": True,
        "seed": seed,
        "data_seed": seed,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def train_method(cfg: WorldConfig, method: str, reference: Path, tokenizer, world: World, seed: int, run_dir: Path):
    """The reference (its model folder) trained with one method by :func:`bfpo.train.run.train_preference`;
    the model folder is ``run_dir/models/METHOD``; returns the trained model. The world's part is the
    method's training set (mode, labels). ``morl`` is trained online instead
    (:func:`bfpo.experiments.world.morl.train_morl_method`)."""
    from bfpo.data.modes import build_training_set
    from bfpo.train.config import BFPOConfig, ModelArguments
    from bfpo.train.run import train_preference

    spec = METHODS[method]
    if spec.get("online"):
        from bfpo.experiments.world.morl import train_morl_method

        return load_policy(train_morl_method(cfg, reference, tokenizer, world, seed, run_dir, run_settings(cfg, seed)))
    safety = world.safety
    if spec.get("labels"):
        from bfpo.experiments.world.soft_labels import relabel

        safety, _ = relabel(world.safety, str(spec["labels"]), cfg.label_noise, seed)
    tset = build_training_set(safety, world.helpful, str(spec["mode"]), seed=seed)
    alpha = float(spec.get("alpha", cfg.alpha))  # type: ignore[arg-type]
    extra = {}
    if spec.get("ablation"):
        extra["enforce_label_signs"] = False  # alpha outside (0, 1) breaks section 3.1's sign rule on purpose
    config = BFPOConfig(
        output_dir=str(run_dir / "models" / method),
        loss=str(spec["loss"]),
        tau=cfg.tau,
        alpha=alpha,
        **extra,
        trainable=cfg.trainable,
        buffered=tset.buffered,
        precompute_ref_log_probs=True,
        ref_cache_dir=str(run_dir / "ref_cache"),
        max_length=cfg.max_length,
        max_prompt_length=cfg.max_length // 2,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=64,
        safedpo_delta=float(spec.get("delta", cfg.safedpo_delta)),
        **run_settings(cfg, seed),
    )  # type: ignore[arg-type]
    train_preference(
        ModelArguments(model_name_or_path=str(reference)),
        config,
        records=tset,
        tokenizer=tokenizer,
        card_title=f"bfpo world: {method} (seed {seed})",
    )
    return load_policy(Path(config.output_dir))  # what the driver saved is what is measured


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
        out[kind] = {
            "mass": exact_masses(model, tokenizer, prompts, world.exemplars[kind], cfg.max_length),
            "sampled": sampled_masses(model, tokenizer, prompts, cfg.samples, seed, cfg.max_new_tokens),
        }
    return out


def run_seed(cfg: WorldConfig, seed: int, out: Path, extras: Optional[Dict] = None) -> Dict[str, Dict]:
    """Every method on one seed: {method: measure(...)} with ``reference`` first.

    ``extras``, when given, collects ``label_classifier`` (the noisy classifier's quality on this seed, when
    a method uses it), ``method_seconds`` (train + measure wall time per method, summed over seeds) and
    ``train_seconds`` (each method's training wall time per seed, a list in seed order)."""
    extras = {} if extras is None else extras
    run_dir = out / "runs" / f"seed{seed}"
    world = build_world(cfg, seed, run_dir / "data")
    t0 = time.perf_counter()
    tokenizer, reference = sft_reference(cfg, world, seed, run_dir)
    logger.info("seed %d: SFT reference in %.1fs", seed, time.perf_counter() - t0)
    results = {"reference": measure(cfg, load_policy(reference), tokenizer, world, seed)}
    if any(METHODS[m].get("labels") for m in cfg.methods):
        extras.setdefault("label_classifier", {})[str(seed)] = label_stats(cfg, world, seed)
    for method in cfg.methods:
        t0 = time.perf_counter()
        model = train_method(cfg, method, reference, tokenizer, world, seed, run_dir)
        extras.setdefault("train_seconds", {}).setdefault(method, []).append(round(time.perf_counter() - t0, 2))
        results[method] = measure(cfg, model, tokenizer, world, seed)
        secs = extras.setdefault("method_seconds", {})
        secs[method] = round(secs.get(method, 0.0) + time.perf_counter() - t0, 1)
        logger.info(
            "seed %d: %s in %.1fs: harmful %s benign %s",
            seed,
            method,
            time.perf_counter() - t0,
            _fmt(results[method]["harmful"]["mass"]),
            _fmt(results[method]["benign"]["mass"]),
        )
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
    out["bfpo_unsafe_below_all_but_dpo_s"] = all(
        b["harmful"]["unsafe_mass"] < methods[m]["harmful"]["unsafe_mass"] for m in others
    )
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
    """Markdown table: exact class masses (mean ± std over seeds), unsafe mass, ranking, sampled shares; then,
    when the result has them, training seconds per seed and the TV distance to the analytic MORL optimum
    (Theorem 3.2), followed by the optimum's own row (:func:`theorem_table`)."""
    from bfpo.figures import markdown_table

    header = [
        "method",
        "harmful a",
        "harmful b",
        "harmful c",
        "harmful d",
        "unsafe c+d",
        "harmful ranking",
        "benign a",
        "benign b",
        "sampled harmful a/b/c/d/other",
        "sampled benign a/b/other",
    ]
    seconds, tv = result.get("train_seconds", {}), result.get("theorem32", {}).get("tv", {})
    if seconds:
        header.append("train s/seed")
    if tv:
        header.append("TV to MORL optimum harmful / benign")
    rows = []
    for method, r in result["methods"].items():
        h, bn = r["harmful"], r["benign"]
        cells = [method] + [f"{h['mass'][c]:.3f} ± {h['mass_std'][c]:.3f}" for c in "abcd"]
        cells.append(f"{h['unsafe_mass']:.3f} ± {h['unsafe_mass_std']:.3f}")
        cells.append(" > ".join(h["ranking"]))
        cells += [f"{bn['mass'][c]:.3f} ± {bn['mass_std'][c]:.3f}" for c in "ab"]
        cells.append("/".join(f"{h['sampled'].get(c, 0.0):.2f}" for c in ("a", "b", "c", "d", "other")))
        cells.append("/".join(f"{bn['sampled'].get(c, 0.0):.2f}" for c in ("a", "b", "other")))
        if seconds:
            cells.append(f"{sum(seconds[method]) / len(seconds[method]):.1f}" if method in seconds else "")
        if tv:
            cells.append(" / ".join(f"{tv[method][k]:.3f} ± {tv[method][f'{k}_std']:.3f}" for k in KINDS))
        rows.append(cells)
    table = markdown_table(header, rows, align="l" * len(header))
    return table + ("\n\n" + theorem_table(result) if tv else "")


def theorem_table(result: Dict) -> str:
    """The analytic MORL optimum ``pi_ref exp(g / tau) / Z`` per prompt kind (mean over seeds) beside g."""
    from bfpo.figures import markdown_table

    th = result["theorem32"]
    rows = []
    for kind in KINDS:
        for c in g.KIND_CLASSES[kind]:
            rows.append([kind, c, f"{th['global_reward'][kind][c]:+.3f}", f"{th['optimum'][kind][c]:.3f}"])
    header = ["prompt kind", "class", "global reward g (Eq. 10)", "MORL optimum pi_ref exp(g/tau)/Z"]
    return markdown_table(header, rows, align="llrr")


def plot(result: Dict, path: Path) -> Path:
    """Stacked exact class masses per method, one panel per prompt kind."""
    from bfpo.figures import bar_chart, save_figure, subplots

    methods = list(result["methods"])
    colors = {"a": "tab:green", "b": "tab:blue", "c": "tab:orange", "d": "tab:red"}
    fig, axes = subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, kind in zip(axes, KINDS):
        series = {
            f"{c}: {g.CLASS_NAMES[c]}": [result["methods"][m][kind]["mass"][c] for m in methods]
            for c in g.KIND_CLASSES[kind]
        }
        bar_chart(
            ax,
            methods,
            series,
            stacked=True,
            colors={f"{c}: {g.CLASS_NAMES[c]}": colors[c] for c in g.KIND_CLASSES[kind]},
        )
        ax.set_title(f"{kind} held-out prompts (exact class mass, mean of {len(result['config']['seeds'])} seeds)")
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("probability mass")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[1].get_legend().remove()
    return save_figure(fig, path)


def run(cfg: WorldConfig, out: Path) -> Dict:
    """All seeds and methods; returns the results.json structure. ``out`` must be new or empty (the
    models of each seed are written under it)."""
    cfg.__post_init__()  # a config edited after construction is checked again
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new --output_dir")
    t0 = time.perf_counter()
    extras: Dict = {}
    per_seed = [run_seed(cfg, seed, out, extras) for seed in cfg.seeds]
    methods = aggregate(per_seed)
    from bfpo.experiments.world.morl import theorem32

    result = {
        "methods": methods,
        "checks": checks(methods),
        "theorem32": theorem32(per_seed, cfg, KINDS),
        "per_seed": per_seed,
        "config": asdict(cfg),
        "classes": g.CLASS_NAMES,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        **extras,
    }
    return result


def parse_args(argv: Optional[Sequence[str]] = None):
    """(:class:`WorldRun`, :class:`WorldConfig`) from ``--config FILE.yaml`` and the flags."""
    from bfpo.experiments.settings import parse_with_quick

    return parse_with_quick(
        [WorldRun, WorldConfig], {WorldConfig: QUICK}, argv, prog="bfpo world", description=__doc__.split("\n\n")[0]
    )


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """``bfpo world``: run, write results.json and world.png, print the table."""
    run_args, cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("transformers", "trl", "bfpo.train", "bfpo.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Path(run_args.output_dir)
    result = run(cfg, out)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "world.png")
    print(format_table(result))
    print(json.dumps(result["checks"], indent=2))
    print(f"wall time {result['wall_seconds']}s; wrote {out / 'results.json'} and {out / 'world.png'}")
    return result
