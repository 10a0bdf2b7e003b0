"""MORL in the safety world (issue 13): the RL baseline with the world's exact rewards, and Theorem 3.2's optimum.

**The global reward.** Eq. 10, ``g(y|x) = (p_safe(y) + A1)(p_help(y > mu|x) + A2)``, with the constants under
which BFPO's label (Eq. 14, alpha) optimises it (Eq. 33, Appendix B.4): ``A2 = B3 = 1/2`` and
``A1 = E_s + 2 B2 B3 = E_s - 2 alpha``. ``p_safe`` is the class's true safety; ``p_help(y > mu)`` is the
class's helpfulness win rate against mu (a tie counts 1/2), where mu is the class distribution of the
world's training pairs for the prompt's kind (harmful: the marginal of ``pair_weights`` over the six class
pairs; benign: a and b equally), and ``E_s`` is mu's mean safety. With the default pair weights
(1, 1, 1, 1, 1, 4) and alpha = 0.5: harmful a 13/36, b 7/36, c -20/36, d -32/36; benign a 5/4, b 3/4.

**Its rewards.** TRL sums rewards with fixed weights, while g is bilinear and its ``A1`` depends on the
prompt (through ``E_s``). Expanded, ``g - A1 A2 = [(p_safe + E_s) p_help] + B3 [p_safe] + 2 B2 B3 [p_help]``:
three reward functions (``coupling``, ``safety``, ``helpfulness``) with the weights (1, B3, 2 B2 B3), which
equal g up to a constant per prompt (which the leave-one-out baseline and the optimum's normaliser both
cancel). A fourth, ``well_formed``, is -1 for a response the classifier cannot parse as a class of the
prompt's kind (``other``) and 0 otherwise; its weight puts ``other`` below every class. So the RLOO
objective's optimum over the classes is exactly :func:`analytic_optimum`.

**Theorem 3.2 check.** ``pi_ref(class) exp(g(class) / tau)`` normalised over the classes of each prompt kind,
with pi_ref the reference's measured class masses (mean over the held-out prompts), and the total-variation
distance of every method's masses to it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from bfpo.experiments.world import generator as g
from bfpo.experiments.world.classifier import classify
from bfpo.experiments.world.datasets import HARMFUL_PAIRS

#: the reward functions given to TRL, in order
TERMS = ("coupling", "safety", "helpfulness", "well_formed")


def pair_marginals(pair_weights: Optional[Sequence[float]]) -> Dict[str, Dict[str, float]]:
    """mu per prompt kind: how often each class appears in the world's training pairs (None = uniform pairs)."""
    weights = list(pair_weights) if pair_weights is not None else [1.0] * len(HARMFUL_PAIRS)
    counts = {c: 0.0 for c in g.KIND_CLASSES["harmful"]}
    for (x, y), w in zip(HARMFUL_PAIRS, weights):
        counts[x] += w
        counts[y] += w
    total = sum(counts.values())
    return {"harmful": {c: v / total for c, v in counts.items()}, "benign": {"a": 0.5, "b": 0.5}}


def win_rates(kind: str, mu: Dict[str, float]) -> Dict[str, float]:
    """``p_help(y > mu)`` of each class: the mu-mass of the classes it is more helpful than, plus half its own."""
    order = g.HELPFULNESS if kind == "harmful" else ("a", "b")  # most helpful first
    return {c: sum(mu[o] for o in order[i + 1 :]) + 0.5 * mu[c] for i, c in enumerate(order)}


def class_terms(kind: str, mu: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """{class: {p_safe, p_help, e_s}} of one prompt kind."""
    e_s = sum(mu[c] * float(g.SAFE[c]) for c in mu)
    p_help = win_rates(kind, mu)
    return {c: {"p_safe": float(g.SAFE[c]), "p_help": p_help[c], "e_s": e_s} for c in g.KIND_CLASSES[kind]}


def global_rewards(mu_by_kind: Dict[str, Dict[str, float]], alpha: float) -> Dict[str, Dict[str, float]]:
    """g(class) of Eq. 10 per prompt kind, with ``A1 = E_s + 2 B2 B3`` and ``A2 = B3`` of Eq. 14's constants."""
    from bfpo.objective import alpha_constants, global_reward

    _, b2, b3 = alpha_constants(alpha)
    out = {}
    for kind, mu in mu_by_kind.items():
        terms = class_terms(kind, mu)
        out[kind] = {
            c: float(global_reward(t["p_safe"], t["p_help"], a1=t["e_s"] + 2 * b2 * b3, a2=b3))
            for c, t in terms.items()
        }
    return out


def reward_table(
    mu_by_kind: Dict[str, Dict[str, float]], alpha: float
) -> Tuple[Dict[str, Dict[str, Dict[str, float]]], List[float]]:
    """({kind: {class or 'other': {term: value}}}, weights in :data:`TERMS` order); the weighted sum of a class's
    terms is ``g - A1 A2`` of its kind, and ``other``'s is below every class's."""
    from bfpo.objective import alpha_constants

    _, b2, b3 = alpha_constants(alpha)
    weights = [1.0, b3, 2 * b2 * b3]
    table: Dict[str, Dict[str, Dict[str, float]]] = {}
    worst = 0.0
    for kind, mu in mu_by_kind.items():
        rows = {}
        for c, t in class_terms(kind, mu).items():
            rows[c] = {
                "coupling": (t["p_safe"] + t["e_s"]) * t["p_help"],
                "safety": t["p_safe"],
                "helpfulness": t["p_help"],
                "well_formed": 0.0,
            }
            worst = max(worst, abs(sum(w * rows[c][k] for w, k in zip(weights, TERMS))))
        rows["other"] = {"coupling": 0.0, "safety": 0.0, "helpfulness": 0.0, "well_formed": -1.0}
        table[kind] = rows
    return table, weights + [1.0 + worst]


class WorldReward:
    """One term of :func:`reward_table` as a TRL reward function: the classifier parses each completion, the
    ``kind`` column says the prompt's kind; a class not valid for the kind counts as ``other``."""

    def __init__(self, term: str, table: Dict[str, Dict[str, Dict[str, float]]]):
        from bfpo.train.morl import text_of

        self.__name__, self.table, self._text = term, table, text_of

    def __call__(self, prompts, completions, kind: Sequence[str], **kwargs) -> List[float]:
        out = []
        for completion, k in zip(completions, kind):
            label = classify(self._text(completion))
            out.append(self.table[k].get(label, self.table[k]["other"])[self.__name__])
        return out


def world_rewards(pair_weights: Optional[Sequence[float]], alpha: float) -> Tuple[List[WorldReward], List[float]]:
    """The four reward functions and their weights (module docstring)."""
    table, weights = reward_table(pair_marginals(pair_weights), alpha)
    return [WorldReward(t, table) for t in TERMS], weights


def analytic_optimum(ref: Dict[str, float], reward: Dict[str, float], tau: float) -> Dict[str, float]:
    """``pi_ref(class) exp(g(class) / tau)``, normalised over the classes of ``ref`` (Theorem 3.1)."""
    from bfpo.train.morl import kl_optimum

    classes = list(ref)
    return dict(zip(classes, kl_optimum([ref[c] for c in classes], [reward[c] for c in classes], tau)))


def total_variation(p: Dict[str, float], q: Dict[str, float]) -> float:
    """``1/2 sum_c |p(c) - q(c)|`` over the classes of ``q``."""
    return 0.5 * sum(abs(p.get(c, 0.0) - q[c]) for c in q)


def theorem32(per_seed: List[Dict[str, Dict]], cfg, kinds: Sequence[str]) -> Dict[str, object]:
    """Per seed and kind, the analytic optimum from that seed's reference masses, and every method's TV
    distance to it (mean and sample std over seeds)."""
    import math

    rewards = global_rewards(pair_marginals(cfg.pair_weights), cfg.alpha)
    optima = [{k: analytic_optimum(r["reference"][k]["mass"], rewards[k], cfg.tau) for k in kinds} for r in per_seed]
    distances: Dict[str, Dict[str, object]] = {}
    for method in per_seed[0]:
        entry: Dict[str, object] = {}
        for k in kinds:
            values = [total_variation(r[method][k]["mass"], o[k]) for r, o in zip(per_seed, optima)]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            entry[k], entry[f"{k}_std"], entry[f"{k}_per_seed"] = mean, std, values
        distances[method] = entry
    mean_optimum = {k: {c: sum(o[k][c] for o in optima) / len(optima) for c in optima[0][k]} for k in kinds}
    return {"global_reward": rewards, "optimum": mean_optimum, "optimum_per_seed": optima, "tv": distances}


def morl_prompts(world, steps: int, per_step: int, seed: int) -> List[Dict[str, str]]:
    """``steps * per_step`` rows (prompt text, kind): the prompts of the BFPO training pairs, drawn alternately
    from the safety set and the helpfulness set as the buffered batches of Algorithm 1 hold them."""
    from bfpo.train.morl import text_of

    kinds = {p.text: p.kind for prompts in world.train.values() for p in prompts}
    sides = [[text_of(r.prompt) for r in world.safety], [text_of(r.prompt) for r in world.helpful]]
    rng = random.Random(f"world-morl:{seed}")
    rows = []
    for i in range(steps * per_step):
        text = rng.choice(sides[i % 2] or sides[1 - i % 2])
        rows.append({"prompt": text, "kind": kinds[text]})
    return rows


def train_morl_method(
    cfg, reference: Path, tokenizer, world, seed: int, run_dir: Path, settings: Dict[str, object]
) -> Path:
    """The reference (its model folder) trained with MORL by :func:`bfpo.train.morl.train_morl` (TRL's RLOO, beta
    = tau, the world's exact rewards) for ``max_steps`` steps of ``batch_size`` prompts with ``morl_generations``
    samples each, with the trainer ``settings`` the other methods use; returns the model folder
    ``run_dir/models/morl``."""
    from trl import RLOOConfig

    from bfpo.train.config import ModelArguments
    from bfpo.train.morl import train_morl

    funcs, weights = world_rewards(cfg.pair_weights, cfg.alpha)
    out = run_dir / "models" / "morl"
    config = RLOOConfig(
        output_dir=str(out),
        beta=cfg.tau,
        num_generations=cfg.morl_generations,
        per_device_train_batch_size=cfg.batch_size * cfg.morl_generations,
        max_completion_length=cfg.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        shuffle_dataset=False,  # keep the alternation of safety-set and helpfulness-set prompts (the buffer)
        gradient_checkpointing=False,
        **settings,
    )
    train_morl(
        ModelArguments(model_name_or_path=str(reference)),
        config,
        prompts=morl_prompts(world, cfg.max_steps, cfg.batch_size, seed),
        reward_funcs=funcs,
        reward_weights=weights,
        tokenizer=tokenizer,
        card_title=f"bfpo world: morl (seed {seed})",
    )
    return out
