"""A K = 3 illustrative experiment in the style of section 3.4: safety > honesty > helpfulness.

Eight actions, helpfulness y1 > y2 > ... > y8, each with a safety and an honesty label:

====  ======  =======  =====================================================
act   safe    honest   global rank (priority order of :mod:`bfpo.multifactor`)
====  ======  =======  =====================================================
y1    0       1        6  (unsafe, honest; the more helpful of its type: worse)
y2    1       0        4  (safe, dishonest; the more helpful of its type: worse)
y3    1       1        1  (safe, honest, the more helpful: best)
y4    0       0        8  (unsafe, dishonest, the more helpful: worst)
y5    1       1        2
y6    0       1        5
y7    1       0        3
y8    0       0        7
====  ======  =======  =====================================================

so the global ranking is y3 > y5 > y7 > y2 > y6 > y1 > y8 > y4. The policy is softmax(theta) over the
eight actions from theta = 0 (uniform reference); the data are all 28 pairs with the more helpful action
as y_hw; every method is trained with Adam on minibatches sampled with replacement, seeds side by side
(as :mod:`bfpo.experiments.toy`). Methods: ``priority`` (Eq. 15 with the K-factor label), ``bfpo`` (Eq. 15 with the
safety label only, i.e. K = 2 ignoring honesty), ``dpo`` and ``ipo`` (the more helpful action wins) and
``safedpo`` (Eq. 12 with the safety label only). ``closed_form`` is the least-squares optimum of the
priority objective.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from bfpo.experiments.toy import curve_steps, method_loss, optimise, plot_curves, ranking, ranking_text, summarise
from bfpo.multifactor import default_priority_weights, multifactor_loss, priority_label

#: (I_safe, I_honest) of y1..y8; index order is the helpfulness order
LABELS = ((0, 1), (1, 0), (1, 1), (0, 0), (1, 1), (0, 1), (1, 0), (0, 0))
GLOBAL_RANKING = [3, 5, 7, 2, 6, 1, 8, 4]
HELPFUL_RANKING = [1, 2, 3, 4, 5, 6, 7, 8]
METHODS = ("priority", "bfpo", "dpo", "ipo", "safedpo")


@dataclass
class K3Config:
    """Settings of the K = 3 toy (section 3.4's optimiser settings; ``bfpo illustrate --experiment k3`` sets
    them from :class:`bfpo.experiments.toy.ToyConfig`'s fields of the same names, tau from ``taus``)."""

    max_steps: int = 1800
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    tau: float = 1.0
    alpha: float = 0.5
    learning_rate: float = 0.01
    batch_size: int = 32
    safedpo_delta: float = 1.0
    lambdas: Optional[List[float]] = None  # None: default_priority_weights(2) = (2, 1)
    methods: List[str] = field(default_factory=lambda: list(METHODS))
    record_every: int = 10


def pairs(n: int = len(LABELS)) -> torch.Tensor:
    """All pairs (i, j), i < j: i is the more helpful action y_hw."""
    return torch.tensor(list(itertools.combinations(range(n), 2)), dtype=torch.long)


def closed_form(tau: float, alpha: float = 0.5, lambdas: Optional[Sequence[float]] = None) -> List[float]:
    """Least-squares optimum of Eq. 15 with the K-factor label over the 28 pairs, softmaxed."""
    pr = pairs()
    lab = torch.tensor(LABELS, dtype=torch.float32)
    design = torch.zeros(len(pr), len(LABELS), dtype=torch.float64)
    design[torch.arange(len(pr)), pr[:, 0]] = 1.0
    design[torch.arange(len(pr)), pr[:, 1]] = -1.0
    g = priority_label(lab[pr[:, 0]], lab[pr[:, 1]], lambdas, b2=-2.0 * alpha).double() / tau
    theta = torch.linalg.lstsq(design, g.unsqueeze(1)).solution.squeeze(1)
    return torch.softmax(theta, 0).tolist()


def train_method(method: str, cfg: K3Config) -> torch.Tensor:
    """Optimise softmax(theta) with one loss for all seeds; returns the curve [records, seeds, 8]."""
    lab = torch.tensor(LABELS, dtype=torch.float32)

    def losses(lw, ll, ref, batch):
        if method == "priority":
            out = multifactor_loss(
                lw.flatten(),
                ll.flatten(),
                ref.flatten(),
                ref.flatten(),
                lab[batch[..., 0]].reshape(-1, 2),
                lab[batch[..., 1]].reshape(-1, 2),
                tau=cfg.tau,
                lambdas=cfg.lambdas,
                b2=-2.0 * cfg.alpha,
            )
            return out.losses.view(lw.shape)
        # the safety label only (K = 2) or helpfulness only
        return method_loss(
            method,
            lw,
            ll,
            ref,
            ref,
            lab[batch[..., 0], 0],
            lab[batch[..., 1], 0],
            tau=cfg.tau,
            alpha=cfg.alpha,
            delta=cfg.safedpo_delta,
        ).losses

    return optimise(
        len(LABELS), pairs(), losses, cfg.max_steps, cfg.seeds, cfg.learning_rate, cfg.batch_size, cfg.record_every
    )


def run(cfg: K3Config) -> Dict:
    """Every method; returns the ``results.json`` structure (curves under '_curves')."""
    methods, curves = {}, {}
    for method in cfg.methods:
        curves[method] = train_method(method, cfg)
        methods[method] = summarise(curves[method][-1])
    cf = closed_form(cfg.tau, cfg.alpha, cfg.lambdas)
    return {
        "config": asdict(cfg),
        "labels": [list(x) for x in LABELS],
        "lambdas": list(cfg.lambdas or default_priority_weights(2)),
        "expected_ranking": {"global": GLOBAL_RANKING, "helpfulness": HELPFUL_RANKING},
        "methods": methods,
        "closed_form": {"priority": cf, "ranking": ranking(cf)},
        "_curves": curves,
    }


def format_table(result: Dict) -> str:
    """Markdown table of final probabilities (mean over seeds) and rankings."""
    from bfpo.figures import markdown_table

    cfg = result["config"]
    rows = [(m, r["mean_probs"], r["ranking"]) for m, r in result["methods"].items()]
    rows.append(("closed-form", result["closed_form"]["priority"], result["closed_form"]["ranking"]))
    head = (
        f"K = 3 toy: tau = {cfg['tau']}, alpha = {cfg['alpha']}, lambdas = {result['lambdas']}, "
        f"delta = {cfg['safedpo_delta']} (global ranking " + " > ".join(f"y{i}" for i in GLOBAL_RANKING) + ")"
    )
    table = markdown_table(
        ["method", *(f"pi(y{i})" for i in range(1, 9)), "ranking"],
        [[name, *(f"{p:.3f}" for p in mean), ranking_text(rank, GLOBAL_RANKING)] for name, mean, rank in rows],
        align="l" + "r" * 8 + "l",
    )
    return head + "\n\n" + table


def plot(result: Dict, path: Path) -> Path:
    """Learning curves of pi(y_i), mean over seeds, a panel per method."""
    from bfpo.figures import save_figure, subplots

    curves = result["_curves"]
    cfg = result["config"]
    methods = list(curves)
    fig, axes = subplots(1, len(methods), figsize=(4.0 * len(methods), 3.4), squeeze=False, sharey=True)
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    labels = [
        f"y{i + 1} ({'safe' if s else 'unsafe'}, {'honest' if h else 'dishonest'})" for i, (s, h) in enumerate(LABELS)
    ]
    some = next(iter(curves.values()))
    plot_curves(
        axes[0],
        curves,
        methods,
        curve_steps(len(some), cfg["record_every"], cfg["max_steps"]),
        labels,
        [cmap(i) for i in range(len(LABELS))],
        styles=["-" if s else "--" for s, _ in LABELS],
        band=False,
    )
    axes[0][0].set_ylabel("pi(y_i)")
    axes[0][0].legend(fontsize=6, loc="upper left")
    return save_figure(fig, path)


def main_k3(run_args, toy_cfg) -> Dict:
    """``bfpo illustrate --experiment k3``: run, write results_k3.json and k3.png, print the table.
    ``run_args`` and ``toy_cfg`` are :func:`bfpo.experiments.toy.parse_args`' settings."""
    from bfpo.args import ConfigError

    methods = list(toy_cfg.methods) if toy_cfg.methods else list(METHODS)
    if len(toy_cfg.taus) != 1:
        raise ConfigError(f"--experiment k3 takes one tau (--taus), got {toy_cfg.taus}")
    if run_args.lambdas is not None and len(run_args.lambdas) != 2:
        raise ConfigError(f"--lambdas takes 2 weights (safety, honesty), got {len(run_args.lambdas)}")
    cfg = K3Config(
        max_steps=toy_cfg.max_steps,
        seeds=list(toy_cfg.seeds),
        tau=float(toy_cfg.taus[0]),
        alpha=toy_cfg.alpha,
        learning_rate=toy_cfg.learning_rate,
        batch_size=toy_cfg.batch_size,
        safedpo_delta=toy_cfg.safedpo_delta,
        lambdas=run_args.lambdas,
        methods=methods,
        record_every=toy_cfg.record_every,
    )
    result = run(cfg)
    out = Path(run_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "k3.png")
    public = {k: v for k, v in result.items() if k != "_curves"}
    (out / "results_k3.json").write_text(json.dumps(public, indent=2))
    print(format_table(result))
    print(f"wrote {out / 'results_k3.json'} and {out / 'k3.png'}")
    return public
