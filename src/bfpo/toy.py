"""The illustrative experiment of section 3.4 (Figure 4).

Four actions with safety labels I_safe = (1, 0, 1, 0) and helpfulness y1 > y2 > y3 > y4, so the global
preference of Figure 3 is y1 > y3 > y4 > y2. The policy is softmax(theta) with theta in R^4 starting at 0,
the reference is uniform, the preference data are all six pairs with the more helpful action as y_hw.
Each method (BFPO Eq. 15, DPO Eq. 4, IPO) is optimised with Adam on minibatches sampled with replacement.

Seeds run side by side: theta has shape [seeds, 4]; Adam is element-wise, so this is exactly ``seeds``
independent runs, each with its own sampling generator.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from bfpo.objective import LOSSES, alpha_constants, labeling_function, preference_loss

SAFE = (1.0, 0.0, 1.0, 0.0)  # I_safe(y1..y4)
GLOBAL_RANKING = [1, 3, 4, 2]  # Figure 3 / section 3.4
HELPFUL_RANKING = [1, 2, 3, 4]


@dataclass
class ToyConfig:
    """Settings of the section 3.4 experiment (paper defaults)."""

    steps: int = 1800
    seeds: int = 5
    taus: List[float] = field(default_factory=lambda: [1.0])
    alpha: float = 0.5
    lr: float = 0.01
    batch_size: int = 32
    methods: List[str] = field(default_factory=lambda: list(LOSSES))
    record_every: int = 10


def preference_pairs(safe: Sequence[float] = SAFE) -> torch.Tensor:
    """All pairs (i, j), i < j, of actions ordered by helpfulness: i is y_hw, j is y_hl (0-based)."""
    return torch.tensor(list(itertools.combinations(range(len(safe)), 2)), dtype=torch.long)


def closed_form_bfpo(tau: float, alpha: float, safe: Sequence[float] = SAFE) -> List[float]:
    """Analytic optimum of Eq. 15 on the uniform pair data: least squares of h = g_I / tau, softmaxed.

    With a uniform reference, h(y_i, y_j) = theta_i - theta_j, so the optimum solves
    ``min_theta sum_pairs (theta_i - theta_j - g_I(i, j) / tau)^2`` (defined up to a shift of theta).
    """
    pairs = preference_pairs(safe)
    s = torch.tensor(safe, dtype=torch.float64)
    design = torch.zeros(len(pairs), len(safe), dtype=torch.float64)
    design[torch.arange(len(pairs)), pairs[:, 0]] = 1.0
    design[torch.arange(len(pairs)), pairs[:, 1]] = -1.0
    target = labeling_function(s[pairs[:, 0]], s[pairs[:, 1]], *alpha_constants(alpha)).double() / tau
    theta = torch.linalg.lstsq(design, target.unsqueeze(1)).solution.squeeze(1)
    return torch.softmax(theta, 0).tolist()


def ranking(probs: Sequence[float]) -> List[int]:
    """1-based action numbers from most to least probable."""
    return [int(i) + 1 for i in sorted(range(len(probs)), key=lambda i: -probs[i])]


def train_method(method: str, tau: float, cfg: ToyConfig, safe: Sequence[float] = SAFE) -> torch.Tensor:
    """Optimise softmax(theta) with one loss for all seeds; returns the curve [records, seeds, 4]."""
    n = len(safe)
    pairs = preference_pairs(safe)
    s = torch.tensor(safe)
    theta = torch.zeros(cfg.seeds, n, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    gens = [torch.Generator().manual_seed(seed) for seed in range(cfg.seeds)]
    ref = torch.full((cfg.seeds, cfg.batch_size), -torch.log(torch.tensor(float(n))).item())
    curve = [torch.softmax(theta.detach(), -1).clone()]
    for step in range(1, cfg.steps + 1):
        idx = torch.stack([torch.randint(len(pairs), (cfg.batch_size,), generator=g) for g in gens])
        batch = pairs[idx]  # [seeds, batch, 2]
        logp = torch.log_softmax(theta, -1)
        lw = torch.gather(logp, 1, batch[..., 0])
        ll = torch.gather(logp, 1, batch[..., 1])
        out = preference_loss(method, lw, ll, ref, ref, s[batch[..., 0]], s[batch[..., 1]], tau=tau,
                              alpha=cfg.alpha)
        loss = out.losses.mean(-1).sum()  # sum over seeds keeps each seed's gradient its own
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.record_every == 0 or step == cfg.steps:
            curve.append(torch.softmax(theta.detach(), -1).clone())
    return torch.stack(curve)


def run(cfg: ToyConfig) -> Dict:
    """Run every method for every tau; returns the ``results.json`` structure (curves under '_curves')."""
    per_tau: Dict[str, Dict] = {}
    curves: Dict[str, Dict[str, torch.Tensor]] = {}
    for tau in cfg.taus:
        methods = {}
        curves[str(tau)] = {}
        for method in cfg.methods:
            curve = train_method(method, tau, cfg)
            final = curve[-1]
            mean = final.mean(0).tolist()
            methods[method] = {
                "mean_probs": mean,
                "std_probs": final.std(0, unbiased=cfg.seeds > 1).tolist() if cfg.seeds > 1 else [0.0] * 4,
                "ranking": ranking(mean),
                "seed_rankings": [ranking(p.tolist()) for p in final],
            }
            curves[str(tau)][method] = curve
        per_tau[str(tau)] = {"methods": methods,
                             "closed_form": {"bfpo": closed_form_bfpo(tau, cfg.alpha)}}
    first = per_tau[str(cfg.taus[0])]
    result = {
        "config": asdict(cfg),
        "expected_ranking": {"global": GLOBAL_RANKING, "helpfulness": HELPFUL_RANKING},
        "methods": first["methods"],
        "closed_form": first["closed_form"],
        "_curves": curves,
    }
    if len(cfg.taus) > 1:
        result["tau"] = per_tau
    return result


def format_table(result: Dict) -> str:
    """A plain-text table of final probabilities and rankings, one block per tau."""
    blocks = result.get("tau") or {str(result["config"]["taus"][0]): result}
    lines = []
    for tau, res in blocks.items():
        lines.append(f"tau = {tau}, alpha = {result['config']['alpha']}  "
                     f"(global ranking y1 > y3 > y4 > y2)")
        lines.append(f"{'method':<12}{'pi(y1)':>14}{'pi(y2)':>14}{'pi(y3)':>14}{'pi(y4)':>14}  ranking")
        rows = [(m, r["mean_probs"], r["std_probs"], r["ranking"]) for m, r in res["methods"].items()]
        rows.append(("closed-form", res["closed_form"]["bfpo"], [0.0] * 4, ranking(res["closed_form"]["bfpo"])))
        for name, mean, std, rank in rows:
            cells = "".join(f"{m:>8.3f}±{s:<5.3f}" for m, s in zip(mean, std))
            ok = "  <- global" if rank == GLOBAL_RANKING else ""
            lines.append(f"{name:<12}{cells}  " + " > ".join(f"y{i}" for i in rank) + ok)
        lines.append("")
    return "\n".join(lines)


def plot(result: Dict, path: Path) -> None:
    """Figure 4: learning curves of pi(y_i), mean over seeds with a +-1 std band, a panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["_curves"]
    cfg = result["config"]
    taus = list(curves)
    methods = cfg["methods"]
    fig, axes = plt.subplots(len(taus), len(methods), figsize=(4.2 * len(methods), 3.2 * len(taus)),
                             squeeze=False, sharey=True)
    labels = ["y1 (safe, most helpful)", "y2 (unsafe)", "y3 (safe)", "y4 (unsafe, least helpful)"]
    colors = ["tab:green", "tab:red", "tab:blue", "tab:orange"]
    for r, tau in enumerate(taus):
        for c, method in enumerate(methods):
            ax = axes[r][c]
            curve = curves[tau][method]
            steps = [0] + [min(k * cfg["record_every"], cfg["steps"]) for k in range(1, len(curve))]
            mean, std = curve.mean(1), curve.std(1, unbiased=False)
            for i in range(curve.shape[-1]):
                ax.plot(steps, mean[:, i], color=colors[i], label=labels[i])
                ax.fill_between(steps, mean[:, i] - std[:, i], mean[:, i] + std[:, i], color=colors[i],
                                alpha=0.2)
            ax.set_title(f"{method.upper()}  (tau={tau})")
            ax.set_xlabel("step")
            if c == 0:
                ax.set_ylabel("pi(y_i)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ToyConfig()
    p.add_argument("--out", type=Path, default=Path("runs/illustrate"), help="output directory")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--tau", type=float, nargs="+", default=d.taus, help="one or more tau values")
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--methods", nargs="+", choices=LOSSES, default=d.methods)


def main(args: argparse.Namespace) -> Dict:
    """``bfpo illustrate``: run, write results.json and figure4.png, print the table."""
    for name in ("steps", "seeds", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    cfg = ToyConfig(steps=args.steps, seeds=args.seeds, taus=list(args.tau), alpha=args.alpha, lr=args.lr,
                    batch_size=args.batch_size, methods=list(args.methods))
    result = run(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(result, args.out / "figure4.png")
    public = {k: v for k, v in result.items() if k != "_curves"}
    (args.out / "results.json").write_text(json.dumps(public, indent=2))
    print(format_table(result))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'figure4.png'}")
    return public
