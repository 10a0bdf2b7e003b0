"""The illustrative experiment of section 3.4 (Figure 4).

Four actions with safety labels I_safe = (1, 0, 1, 0) and helpfulness y1 > y2 > y3 > y4, so the global
preference of Figure 3 is y1 > y3 > y4 > y2. The policy is softmax(theta) with theta in R^4 starting at 0,
the reference is uniform, the preference data are all six pairs with the more helpful action as y_hw.
Each method (BFPO Eq. 15, DPO Eq. 4, IPO, and SafeDPO Eq. 12 of Kim et al., arXiv 2505.20065) is
optimised with Adam on minibatches sampled with replacement.

Closed forms (:func:`closed_form_bfpo`, :func:`bfpo_optimum`) and Theorem 3.2 checked numerically:
:func:`morl_optimum` is the optimum ``pi_ref exp(g / tau) / Z`` of the MORL objective (Eq. 7, Theorem 3.1)
with the global reward g of Eq. 10 and the constants of Eq. 33; :func:`theorem32_check` compares it with
BFPO's closed-form optimum. ``bfpo illustrate --experiment k3`` runs the K = 3 priority toy of
:mod:`bfpo.experiments.toy_multifactor`.

Seeds run side by side: theta has shape [seeds, 4]; Adam is element-wise, so this is exactly ``seeds``
independent runs, each with its own sampling generator.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from bfpo.args import ConfigError, choices
from bfpo.experiments.settings import setting
from bfpo.objective import LOSSES, alpha_constants, labeling_function, preference_loss

#: the methods of the toy: every loss of :data:`bfpo.objective.LOSSES` (BFPO, DPO, IPO, SafeDPO)
METHODS = tuple(LOSSES)
SAFE = (1.0, 0.0, 1.0, 0.0)  # I_safe(y1..y4)
GLOBAL_RANKING = [1, 3, 4, 2]  # Figure 3 / section 3.4
HELPFUL_RANKING = [1, 2, 3, 4]


#: ``--experiment k3`` (:mod:`bfpo.experiments.toy_multifactor`) trains ``priority`` too
ALL_METHODS = (*METHODS, "priority")


@dataclass
class ToyConfig:
    """Settings of the section 3.4 experiment (paper defaults)."""

    max_steps: int = setting("Adam steps", default=1800)
    seeds: List[int] = setting(
        "seeds, run side by side (each its own minibatch sampler); results are the mean and std over them",
        default_factory=lambda: [0, 1, 2, 3, 4],
    )
    taus: List[float] = setting(
        "one or more tau values (one run of every method per tau; --experiment k3 takes one)",
        default_factory=lambda: [1.0],
    )
    alpha: float = setting("label shift alpha of Eq. 14", default=0.5)
    learning_rate: float = setting("Adam learning rate", default=0.01)
    batch_size: int = setting("pairs per step, drawn with replacement", default=32)
    methods: Optional[List[str]] = choices(
        *ALL_METHODS,
        default=None,
        help=(
            "methods to train (default: all of the experiment's: bfpo dpo ipo safedpo; --experiment k3 adds priority)"
        ),
    )
    record_every: int = setting("steps between the points of the learning curves", default=10)
    safedpo_delta: float = setting("SafeDPO's safety margin Delta (Eq. 12), in the units of tau * h", default=1.0)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "record_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, at least one, got {self.seeds}")
        if not self.taus or min(self.taus) <= 0:
            raise ValueError(f"taus must be one or more values > 0, got {self.taus}")
        if not self.safedpo_delta >= 0:
            raise ValueError(f"safedpo_delta must be >= 0, got {self.safedpo_delta}")


@dataclass
class IllustrateRun:
    """Which toy, and where its results go."""

    output_dir: str = setting(
        "output folder: results.json and figure4.png (k3: results_k3.json and k3.png)", default="runs/illustrate"
    )
    experiment: str = choices(
        "figure4",
        "k3",
        default="figure4",
        help=(
            "figure4: section 3.4 with SafeDPO and the Theorem 3.2 check; k3: the K = 3 priority toy (safety > "
            "honesty > helpfulness, docs/multifactor.md)"
        ),
    )
    lambdas: Optional[List[float]] = setting(
        "k3 only: priority weights of safety and honesty (default 2 1)", default=None
    )


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


def method_loss(
    method: str,
    lw: torch.Tensor,
    ll: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    safe_w: torch.Tensor,
    safe_l: torch.Tensor,
    tau: float,
    alpha: float,
    delta: float,
):
    """The loss of one toy method on pairs (chosen = more helpful), by name; ``delta`` is SafeDPO's margin."""
    return preference_loss(method, lw, ll, ref_w, ref_l, safe_w, safe_l, tau=tau, alpha=alpha, delta=delta)


# ------------------------------------------------------------------------------- Theorem 3.2
def helpfulness_winrate(mu: Sequence[float]) -> torch.Tensor:
    """p*_help(y > pi) of Eq. 10 for actions ordered by helpfulness (index 0 most helpful).

    ``p_h(y_i) = sum_j mu_j [I_help(y_i > y_j) + 1/2 I(i = j)]`` with y' ~ mu, the pair distribution's
    marginal; a tie (y' = y) counts 1/2, which is what Appendix B.3 uses (``E_{y ~ mu}[p_h(y)] = 1/2``).
    """
    m = torch.as_tensor(mu, dtype=torch.float64)
    n = len(m)
    wins = torch.tensor(
        [[1.0 if i < j else (0.5 if i == j else 0.0) for j in range(n)] for i in range(n)], dtype=torch.float64
    )
    return wins @ m


def global_reward_eq33(safe: Sequence[float], mu: Sequence[float], b1: float, b2: float, b3: float) -> torch.Tensor:
    """g(y) of Eq. 10 whose optimum BFPO's label (Eq. 9 with B1, B2, B3) reaches, by Eq. 33 (Appendix B.4).

    ``g(y) = (p_safe(y) + A1)(p_help(y > mu) + A2)`` with ``A2 = B3`` and ``A1 = E_s + 2 B2 B3`` (Eq. 33 is
    printed as ``E_s + 2 B3 B3``; aligning the p_help coefficients of Eq. 31 and Eq. 32 gives
    ``2 B3 ((B1 - 1) E_s + 2 B2) = 2 A1``, i.e. ``2 B2 B3``). Eq. 33's first condition,
    ``B3 (B1 - 1) = 1``, is not imposed here: with other constants the two optima differ, which
    :func:`theorem32_check` shows.
    """
    s = torch.as_tensor(safe, dtype=torch.float64)
    m = torch.as_tensor(mu, dtype=torch.float64)
    e_s = float((m * s).sum())
    return (s + e_s + 2.0 * b2 * b3) * (helpfulness_winrate(m) + b3)


def morl_optimum(
    tau: float,
    safe: Sequence[float],
    mu: Sequence[float] | None = None,
    ref: Sequence[float] | None = None,
    b1: float = 3.0,
    b2: float = -1.0,
    b3: float = 0.5,
) -> List[float]:
    """Theorem 3.1: the MORL optimum ``pi_ref(y) exp(g(y) / tau) / Z`` with g of :func:`global_reward_eq33`.

    ``mu`` (uniform by default) is the distribution the pairs y, y' are drawn from; ``ref`` is pi_ref
    (uniform by default). Defaults: the Eq. 14 constants for alpha = 0.5.
    """
    n = len(safe)
    m = torch.full((n,), 1.0 / n, dtype=torch.float64) if mu is None else torch.as_tensor(mu, dtype=torch.float64)
    r = torch.full((n,), 1.0 / n, dtype=torch.float64) if ref is None else torch.as_tensor(ref, dtype=torch.float64)
    g = global_reward_eq33(safe, m, b1, b2, b3)
    return torch.softmax(torch.log(r) + g / tau, 0).tolist()


def bfpo_optimum(
    tau: float,
    safe: Sequence[float],
    mu: Sequence[float] | None = None,
    ref: Sequence[float] | None = None,
    b1: float = 3.0,
    b2: float = -1.0,
    b3: float = 0.5,
) -> List[float]:
    """The minimiser of Eq. 15 (with Eq. 9's label) over pairs y, y' ~ mu x mu, by weighted least squares.

    Actions are ordered by helpfulness (index 0 most helpful), so for i < j the pair is (y_hw, y_hl) =
    (y_i, y_j); ``h = (theta_i - log ref_i) - (theta_j - log ref_j)``. Solved numerically (``lstsq``), not
    with the formula of Appendix B, so that :func:`theorem32_check` tests the theorem rather than restating it.
    Equal actions (y = y') contribute ``h = 0`` with label 0 and are left out. Soft labels are allowed.
    """
    n = len(safe)
    m = torch.full((n,), 1.0 / n, dtype=torch.float64) if mu is None else torch.as_tensor(mu, dtype=torch.float64)
    r = torch.full((n,), 1.0 / n, dtype=torch.float64) if ref is None else torch.as_tensor(ref, dtype=torch.float64)
    s = torch.as_tensor(safe, dtype=torch.float64)
    pairs = [(i, j) for i in range(n) for j in range(n) if i < j]
    design = torch.zeros(len(pairs), n, dtype=torch.float64)
    target = torch.zeros(len(pairs), dtype=torch.float64)
    weight = torch.zeros(len(pairs), dtype=torch.float64)
    logr = torch.log(r)
    for row, (i, j) in enumerate(pairs):
        design[row, i], design[row, j] = 1.0, -1.0
        label = float(labeling_function(s[i].float(), s[j].float(), b1, b2, b3, **_no_sign_rule()))
        target[row] = label / tau + logr[i] - logr[j]
        weight[row] = 2.0 * m[i] * m[j]  # both orders of the pair; the squared loss is skew-symmetric
    w = weight.sqrt().unsqueeze(1)
    theta = torch.linalg.lstsq(design * w, (target.unsqueeze(1) * w)).solution.squeeze(1)
    return torch.softmax(theta, 0).tolist()


def _no_sign_rule() -> Dict[str, bool]:
    """``sign_rule=False`` where :func:`labeling_function` has that switch (the checks here use ablation
    constants such as alpha = 0 on purpose), nothing where it does not."""
    import inspect

    return {"sign_rule": False} if "sign_rule" in inspect.signature(labeling_function).parameters else {}


def theorem32_check(
    tau: float,
    safe: Sequence[float],
    mu: Sequence[float] | None = None,
    ref: Sequence[float] | None = None,
    b1: float = 3.0,
    b2: float = -1.0,
    b3: float = 0.5,
) -> Dict[str, object]:
    """Distance between BFPO's closed-form optimum and the MORL optimum ``pi_ref exp(g / tau) / Z``.

    Returns both distributions, their total-variation distance ``tv``, their largest absolute difference
    ``max_abs`` and ``dependence``. Appendix B.3 (Eq. 29 -> Eq. 30) replaces
    ``c(y) = E_{y' ~ mu}[I_help(y > y') I_safe(y')]`` by ``p_help(y) E_s``; the two optima coincide exactly
    (given Eq. 33) when ``c(y) - p_help(y) E_s`` is the same for every y (a common shift cancels in the
    softmax). ``dependence`` is the spread (max - min over y) of that difference, ties y' = y counted 1/2.
    """
    bf = bfpo_optimum(tau, safe, mu, ref, b1, b2, b3)
    mo = morl_optimum(tau, safe, mu, ref, b1, b2, b3)
    n = len(safe)
    m = torch.full((n,), 1.0 / n, dtype=torch.float64) if mu is None else torch.as_tensor(mu, dtype=torch.float64)
    s = torch.as_tensor(safe, dtype=torch.float64)
    e_s = float((m * s).sum())
    p_h = helpfulness_winrate(m)
    cov = []
    for i in range(n):
        beats = torch.tensor([1.0 if i < j else (0.5 if i == j else 0.0) for j in range(n)], dtype=torch.float64)
        cov.append(float((m * beats * s).sum()) - float(p_h[i]) * e_s)
    dep = max(cov) - min(cov)
    diff = [abs(a - b) for a, b in zip(bf, mo)]
    return {
        "bfpo": bf,
        "morl": mo,
        "tv": 0.5 * sum(diff),
        "max_abs": max(diff),
        "dependence": dep,
        "eq33_holds": abs(b3 * (b1 - 1.0) - 1.0) < 1e-12,
    }


def ranking(probs: Sequence[float]) -> List[int]:
    """1-based action numbers from most to least probable."""
    return [int(i) + 1 for i in sorted(range(len(probs)), key=lambda i: -probs[i])]


def optimise(
    n: int,
    pairs: torch.Tensor,
    batch_losses: Callable[..., torch.Tensor],
    steps: int,
    seeds: Sequence[int],
    lr: float,
    batch_size: int,
    record_every: int,
) -> torch.Tensor:
    """Adam on softmax(theta), theta in R^n from 0, seeds side by side; returns the curve [records, seeds, n].

    Each step draws ``batch_size`` pairs (rows of ``pairs``, column 0 = y_hw) with replacement per seed and
    calls ``batch_losses(lw, ll, ref, batch)`` with the log-probs of y_hw and y_hl ``[seeds, batch]``, the
    uniform reference's log-probs and the pair indices ``[seeds, batch, 2]``; it returns per-pair losses
    ``[seeds, batch]``. Adam is element-wise, so this is one independent run per seed in ``seeds`` (each
    seeds its own sampling generator).
    """
    theta = torch.zeros(len(seeds), n, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    ref = torch.full((len(seeds), batch_size), -torch.log(torch.tensor(float(n))).item())
    curve = [torch.softmax(theta.detach(), -1).clone()]
    for step in range(1, steps + 1):
        idx = torch.stack([torch.randint(len(pairs), (batch_size,), generator=g) for g in gens])
        batch = pairs[idx]  # [seeds, batch, 2]
        logp = torch.log_softmax(theta, -1)
        lw = torch.gather(logp, 1, batch[..., 0])
        ll = torch.gather(logp, 1, batch[..., 1])
        loss = batch_losses(lw, ll, ref, batch).mean(-1).sum()  # the sum over seeds keeps each seed's gradient
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % record_every == 0 or step == steps:
            curve.append(torch.softmax(theta.detach(), -1).clone())
    return torch.stack(curve)


def summarise(final: torch.Tensor) -> Dict:
    """Mean and std over seeds of the final probabilities ``[seeds, n]``, with rankings."""
    mean = final.mean(0).tolist()
    seeds, n = final.shape
    return {
        "mean_probs": mean,
        "std_probs": final.std(0, unbiased=True).tolist() if seeds > 1 else [0.0] * n,
        "ranking": ranking(mean),
        "seed_rankings": [ranking(p.tolist()) for p in final],
    }


def train_method(method: str, tau: float, cfg: ToyConfig, safe: Sequence[float] = SAFE) -> torch.Tensor:
    """Optimise softmax(theta) with one loss for all seeds; returns the curve [records, seeds, 4]."""
    s = torch.tensor(safe)

    def losses(lw, ll, ref, batch):
        return method_loss(
            method,
            lw,
            ll,
            ref,
            ref,
            s[batch[..., 0]],
            s[batch[..., 1]],
            tau=tau,
            alpha=cfg.alpha,
            delta=cfg.safedpo_delta,
        ).losses

    return optimise(
        len(safe),
        preference_pairs(safe),
        losses,
        cfg.max_steps,
        cfg.seeds,
        cfg.learning_rate,
        cfg.batch_size,
        cfg.record_every,
    )


def run(cfg: ToyConfig) -> Dict:
    """Run every method for every tau; returns the ``results.json`` structure (curves under '_curves')."""
    if cfg.methods is None:
        cfg = replace(cfg, methods=list(METHODS))
    if "priority" in cfg.methods:
        raise ValueError("method priority is the K = 3 toy's: --experiment k3")
    per_tau: Dict[str, Dict] = {}
    curves: Dict[str, Dict[str, torch.Tensor]] = {}
    for tau in cfg.taus:
        methods = {}
        curves[str(tau)] = {}
        for method in cfg.methods:
            curve = train_method(method, tau, cfg)
            methods[method] = summarise(curve[-1])
            curves[str(tau)][method] = curve
        b1, b2, b3 = alpha_constants(cfg.alpha)
        check = theorem32_check(tau, SAFE, b1=b1, b2=b2, b3=b3)
        theorem = {
            "morl_optimum": check["morl"],
            "closed_form_vs_morl_max_abs": check["max_abs"],
            "closed_form_vs_morl_tv": check["tv"],
            "dependence": check["dependence"],
        }
        if "bfpo" in methods:
            trained = methods["bfpo"]["mean_probs"]
            theorem["trained_bfpo_vs_morl_max_abs"] = max(abs(a - b) for a, b in zip(trained, check["morl"]))
        per_tau[str(tau)] = {
            "methods": methods,
            "closed_form": {"bfpo": closed_form_bfpo(tau, cfg.alpha)},
            "theorem_3_2": theorem,
        }
    first = per_tau[str(cfg.taus[0])]
    result = {
        "config": asdict(cfg),
        "expected_ranking": {"global": GLOBAL_RANKING, "helpfulness": HELPFUL_RANKING},
        "methods": first["methods"],
        "closed_form": first["closed_form"],
        "theorem_3_2": first["theorem_3_2"],
        "_curves": curves,
    }
    if len(cfg.taus) > 1:
        result["tau"] = per_tau
    return result


def ranking_text(rank: Sequence[int], expected: Sequence[int]) -> str:
    return " > ".join(f"y{i}" for i in rank) + (" (global)" if list(rank) == list(expected) else "")


def format_table(result: Dict) -> str:
    """Markdown tables of final probabilities (mean ± std over seeds) and rankings, one per tau."""
    from bfpo.figures import markdown_table

    blocks = result.get("tau") or {str(result["config"]["taus"][0]): result}
    lines = []
    for tau, res in blocks.items():
        lines.append(f"tau = {tau}, alpha = {result['config']['alpha']} (global ranking y1 > y3 > y4 > y2)")
        lines.append("")
        rows = [(m, r["mean_probs"], r["std_probs"], r["ranking"]) for m, r in res["methods"].items()]
        rows.append(("closed-form", res["closed_form"]["bfpo"], [0.0] * 4, ranking(res["closed_form"]["bfpo"])))
        th = res.get("theorem_3_2")
        if th:
            rows.append(("MORL optimum", th["morl_optimum"], [0.0] * 4, ranking(th["morl_optimum"])))
        lines.append(
            markdown_table(
                ["method", "pi(y1)", "pi(y2)", "pi(y3)", "pi(y4)", "ranking"],
                [
                    [name, *(f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std)), ranking_text(rank, GLOBAL_RANKING)]
                    for name, mean, std, rank in rows
                ],
                align="lrrrrl",
            )
        )
        if th:
            line = (
                f"Theorem 3.2: |closed-form BFPO - MORL optimum pi_ref exp(g/tau)/Z|_max = "
                f"{th['closed_form_vs_morl_max_abs']:.2e}"
            )
            if "trained_bfpo_vs_morl_max_abs" in th:
                line += f"; trained BFPO (mean of seeds) vs MORL optimum: {th['trained_bfpo_vs_morl_max_abs']:.4f}"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def plot_curves(
    axes,
    curves: Dict[str, torch.Tensor],
    titles: Sequence[str],
    steps: Sequence[int],
    labels: Sequence[str],
    colors: Sequence[Any],
    styles: Optional[Sequence[str]] = None,
    band: bool = True,
) -> None:
    """Learning curves of pi(y_i) on one row of ``axes``: mean over seeds, with a +-1 std band."""
    for c, (ax, curve) in enumerate(zip(axes, curves.values())):
        mean, std = curve.mean(1), curve.std(1, unbiased=False)
        for i in range(curve.shape[-1]):
            ax.plot(steps, mean[:, i], color=colors[i], label=labels[i], linestyle=styles[i] if styles else "-")
            if band:
                ax.fill_between(steps, mean[:, i] - std[:, i], mean[:, i] + std[:, i], color=colors[i], alpha=0.2)
        ax.set_title(titles[c])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)


def curve_steps(n_points: int, record_every: int, max_steps: int) -> List[int]:
    """The step of each recorded point of a curve from :func:`optimise`."""
    return [0] + [min(k * record_every, max_steps) for k in range(1, n_points)]


def plot(result: Dict, path: Path) -> Path:
    """Figure 4: learning curves of pi(y_i), mean over seeds with a +-1 std band, a panel per method."""
    from bfpo.figures import save_figure, subplots

    curves = result["_curves"]
    cfg = result["config"]
    taus = list(curves)
    methods = cfg["methods"]
    fig, axes = subplots(
        len(taus), len(methods), figsize=(4.2 * len(methods), 3.2 * len(taus)), squeeze=False, sharey=True
    )
    labels = ["y1 (safe, most helpful)", "y2 (unsafe)", "y3 (safe)", "y4 (unsafe, least helpful)"]
    colors = ["tab:green", "tab:red", "tab:blue", "tab:orange"]
    for r, tau in enumerate(taus):
        some = next(iter(curves[tau].values()))
        plot_curves(
            axes[r],
            curves[tau],
            [f"{m.upper()}  (tau={tau})" for m in curves[tau]],
            curve_steps(len(some), cfg["record_every"], cfg["max_steps"]),
            labels,
            colors,
        )
        axes[r][0].set_ylabel("pi(y_i)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[IllustrateRun, ToyConfig]:
    """(:class:`IllustrateRun`, :class:`ToyConfig`) from ``--config FILE.yaml`` and the flags."""
    from bfpo.args import parse

    return parse([IllustrateRun, ToyConfig], argv, prog="bfpo illustrate", description=__doc__.split("\n\n")[0])


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """``bfpo illustrate``: run, write results.json and figure4.png, print the table."""
    run_args, cfg = parse_args(argv)
    out = Path(run_args.output_dir)
    if run_args.experiment == "k3":
        from bfpo.experiments import toy_multifactor

        return toy_multifactor.main_k3(run_args, cfg)
    if run_args.lambdas is not None:
        raise ConfigError("--lambdas is the K = 3 toy's: --experiment k3")
    if cfg.methods and "priority" in cfg.methods:
        raise ConfigError("--methods priority needs --experiment k3")
    result = run(cfg)
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "figure4.png")
    public = {k: v for k, v in result.items() if k != "_curves"}
    (out / "results.json").write_text(json.dumps(public, indent=2))
    print(format_table(result))
    print(f"wrote {out / 'results.json'} and {out / 'figure4.png'}")
    return public
