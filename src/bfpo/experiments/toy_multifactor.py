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

import argparse
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from bfpo.multifactor import default_priority_weights, multifactor_loss, priority_label
from bfpo.experiments.toy import method_loss, optimise, ranking, summarise

#: (I_safe, I_honest) of y1..y8; index order is the helpfulness order
LABELS = ((0, 1), (1, 0), (1, 1), (0, 0), (1, 1), (0, 1), (1, 0), (0, 0))
GLOBAL_RANKING = [3, 5, 7, 2, 6, 1, 8, 4]
HELPFUL_RANKING = [1, 2, 3, 4, 5, 6, 7, 8]
METHODS = ("priority", "bfpo", "dpo", "ipo", "safedpo")


@dataclass
class K3Config:
    """Settings of the K = 3 toy (section 3.4's optimiser settings)."""

    steps: int = 1800
    seeds: int = 5
    tau: float = 1.0
    alpha: float = 0.5
    lr: float = 0.01
    batch_size: int = 32
    delta: float = 1.0
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
            out = multifactor_loss(lw.flatten(), ll.flatten(), ref.flatten(), ref.flatten(),
                                   lab[batch[..., 0]].reshape(-1, 2), lab[batch[..., 1]].reshape(-1, 2),
                                   tau=cfg.tau, lambdas=cfg.lambdas, b2=-2.0 * cfg.alpha)
            return out.losses.view(lw.shape)
        # the safety label only (K = 2) or helpfulness only
        return method_loss(method, lw, ll, ref, ref, lab[batch[..., 0], 0], lab[batch[..., 1], 0], tau=cfg.tau,
                           alpha=cfg.alpha, delta=cfg.delta).losses

    return optimise(len(LABELS), pairs(), losses, cfg.steps, cfg.seeds, cfg.lr, cfg.batch_size, cfg.record_every)


def run(cfg: K3Config) -> Dict:
    """Every method; returns the ``results.json`` structure (curves under '_curves')."""
    methods, curves = {}, {}
    for method in cfg.methods:
        curves[method] = train_method(method, cfg)
        methods[method] = summarise(curves[method][-1])
    cf = closed_form(cfg.tau, cfg.alpha, cfg.lambdas)
    return {"config": asdict(cfg), "labels": [list(x) for x in LABELS],
            "lambdas": list(cfg.lambdas or default_priority_weights(2)),
            "expected_ranking": {"global": GLOBAL_RANKING, "helpfulness": HELPFUL_RANKING},
            "methods": methods, "closed_form": {"priority": cf, "ranking": ranking(cf)}, "_curves": curves}


def format_table(result: Dict) -> str:
    """Plain-text table of final probabilities and rankings."""
    cfg = result["config"]
    lines = [f"K = 3 toy: tau = {cfg['tau']}, alpha = {cfg['alpha']}, lambdas = {result['lambdas']}, "
             f"delta = {cfg['delta']} (global ranking " + " > ".join(f"y{i}" for i in GLOBAL_RANKING) + ")",
             f"{'method':<12}" + "".join(f"{'pi(y' + str(i) + ')':>9}" for i in range(1, 9)) + "  ranking"]
    rows = [(m, r["mean_probs"], r["ranking"]) for m, r in result["methods"].items()]
    rows.append(("closed-form", result["closed_form"]["priority"], result["closed_form"]["ranking"]))
    for name, mean, rank in rows:
        ok = "  <- global" if rank == GLOBAL_RANKING else ""
        lines.append(f"{name:<12}" + "".join(f"{p:>9.3f}" for p in mean) + "  "
                     + " > ".join(f"y{i}" for i in rank) + ok)
    return "\n".join(lines)


def plot(result: Dict, path: Path) -> None:
    """Learning curves of pi(y_i), mean over seeds, a panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["_curves"]
    cfg = result["config"]
    methods = list(curves)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.0 * len(methods), 3.4), squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab10")
    for c, method in enumerate(methods):
        ax = axes[0][c]
        curve = curves[method]
        steps = [0] + [min(k * cfg["record_every"], cfg["steps"]) for k in range(1, len(curve))]
        mean = curve.mean(1)
        for i in range(curve.shape[-1]):
            s, h = LABELS[i]
            ax.plot(steps, mean[:, i], color=cmap(i), linestyle="-" if s else "--",
                    label=f"y{i + 1} ({'safe' if s else 'unsafe'}, {'honest' if h else 'dishonest'})")
        ax.set_title(method)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pi(y_i)")
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> Dict:
    """``bfpo illustrate --experiment k3``: run, write results_k3.json and k3.png, print the table."""
    methods = list(args.methods) if args.methods else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--experiment k3 runs {', '.join(METHODS)}; unknown: {', '.join(unknown)}")
    if len(args.tau) != 1:
        raise SystemExit("--experiment k3 takes one --tau")
    cfg = K3Config(steps=args.steps, seeds=args.seeds, tau=float(args.tau[0]), alpha=args.alpha, lr=args.lr,
                   batch_size=args.batch_size, delta=args.delta, lambdas=args.lambdas, methods=methods)
    result = run(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(result, args.out / "k3.png")
    public = {k: v for k, v in result.items() if k != "_curves"}
    (args.out / "results_k3.json").write_text(json.dumps(public, indent=2))
    print(format_table(result))
    print(f"wrote {args.out / 'results_k3.json'} and {args.out / 'k3.png'}")
    return public
