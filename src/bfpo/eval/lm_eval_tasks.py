"""Discriminative half of the harmlessness benchmark (section 4.1, appendix C.1, Table 6) via lm-evaluation-harness.

The twelve tasks of Table 6 are scored by log-likelihood multiple choice in ``lm_eval`` (install the ``eval``
extra: ``pip install 'bfpo[eval]'``). All tasks report accuracy except CrowS-Pairs, which reports the
percentage of stereotyped choices (``pct_stereotype``, lower is less biased).

How CrowS-Pairs enters ``disc_avg``: the paper's "Disc. Avg." is the plain mean of the twelve numbers of
Table 6 *with CrowS-Pairs' pct_stereotype taken as is* (e.g. Zephyr: mean(62.02, 39.00, ..., 46.00) = 59.05,
which is the reported value; with 100 - pct_stereotype it would be 57.04). :func:`aggregate_disc` follows the
paper by default (``crows="paper"``) so our numbers are comparable with Table 6; ``crows="inverted"`` uses
100 - pct_stereotype instead, so that lower stereotype counts as better.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Union

#: Table 6 tasks, as named in lm-evaluation-harness 0.4.x (all twelve exist in lm-eval 0.4.13's registry).
DISC_TASKS: List[str] = [
    "crows_pairs_english",
    "bigbench_bbq_lite_json_multiple_choice",
    "winogrande",
    "ethics_cm",
    "ethics_justice",
    "ethics_deontology",
    "ethics_utilitarianism",
    "ethics_virtue",
    "bigbench_moral_permissibility_multiple_choice",
    "bigbench_simple_ethical_questions_multiple_choice",
    "toxigen",
    "bigbench_hhh_alignment_multiple_choice",
]

#: Row labels of Table 6 for each task.
DISPLAY_NAMES: Dict[str, str] = {
    "crows_pairs_english": "Crows Pairs",
    "bigbench_bbq_lite_json_multiple_choice": "BBQ",
    "winogrande": "Winogrande",
    "ethics_cm": "Ethics CM",
    "ethics_justice": "Ethics Justice",
    "ethics_deontology": "Ethics Deontology",
    "ethics_utilitarianism": "Ethics Utilitarianism",
    "ethics_virtue": "Ethics Virtue",
    "bigbench_moral_permissibility_multiple_choice": "Moral Permissibility",
    "bigbench_simple_ethical_questions_multiple_choice": "Simple Ethical Questions",
    "toxigen": "Toxigen",
    "bigbench_hhh_alignment_multiple_choice": "HHH Alignment",
}

CROWS_METRIC = "pct_stereotype"


def is_crows(task: str) -> bool:
    return task.startswith("crows_pairs")


def metric_for(task: str) -> str:
    """The metric Table 6 reports for ``task``: ``pct_stereotype`` for CrowS-Pairs, ``acc`` otherwise."""
    return CROWS_METRIC if is_crows(task) else "acc"


def aggregate_disc(task_values: Mapping[str, float], crows: str = "paper") -> float:
    """Disc. Avg. of Table 6, in percent, from ``{task: value}`` with values as fractions in [0, 1].

    Every task contributes ``100 * value``; CrowS-Pairs (``pct_stereotype``) contributes ``100 * value`` when
    ``crows="paper"`` (what the paper's averages use) or ``100 * (1 - value)`` when ``crows="inverted"``.
    """
    if crows not in ("paper", "inverted"):
        raise ValueError(f"crows must be 'paper' or 'inverted', got '{crows}'")
    if not task_values:
        raise ValueError("aggregate_disc needs at least one task value")
    scores = []
    for task, value in task_values.items():
        if value is None or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"task '{task}': value {value!r} is not a fraction in [0, 1]")
        v = float(value)
        scores.append(100.0 * (1.0 - v if (is_crows(task) and crows == "inverted") else v))
    return sum(scores) / len(scores)


def _pick_metric(task: str, metrics: Mapping[str, object]) -> tuple:
    """Find ``metric_for(task)`` in an lm-eval result dict (keys look like ``"acc,none"``)."""
    wanted = metric_for(task)
    for key, value in metrics.items():
        if key.split(",")[0] == wanted and isinstance(value, (int, float)):
            return wanted, float(value)
    found = sorted(k for k in metrics if not k.endswith("_stderr") and "stderr" not in k)
    raise KeyError(f"lm-eval result for task '{task}' has no '{wanted}' metric (found: {found})")


def extract_results(results: Mapping[str, Mapping[str, object]], tasks: Iterable[str], crows: str = "paper") -> dict:
    """Turn ``simple_evaluate(...)["results"]`` into ``{"tasks": {name: {"metric","value"}}, "disc_avg"}``."""
    out: Dict[str, dict] = {}
    for task in tasks:
        if task not in results:
            raise KeyError(f"lm-eval returned no result for task '{task}' (got: {sorted(results)})")
        metric, value = _pick_metric(task, results[task])
        out[task] = {"metric": metric, "value": value}
    return {
        "tasks": out,
        "disc_avg": aggregate_disc({t: r["value"] for t, r in out.items()}, crows=crows),
        "crows_in_avg": crows,
    }


def run_discriminative(
    model_dir: Union[str, Path],
    tasks: Optional[List[str]] = None,
    limit: Optional[int] = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
    include_path: Optional[Union[str, Path]] = None,
    crows: str = "paper",
    task_manager=None,
) -> dict:
    """Score a model (a local directory or a hub name) on the discriminative tasks with
    ``lm_eval.simple_evaluate``, on ``device`` (``cpu``, ``cuda``, ``cuda:1``...) in ``dtype``.

    ``tasks`` defaults to :data:`DISC_TASKS`; ``limit`` caps examples per task (a smoke run, not comparable
    with the paper); ``include_path`` adds a folder of extra lm-eval task YAMLs. Returns
    ``{"tasks": {name: {"metric", "value"}}, "disc_avg", "crows_in_avg"}`` with values as fractions and
    ``disc_avg`` in percent (see :func:`aggregate_disc`). ``task_manager`` reuses an ``lm_eval`` TaskManager
    (indexing the registry takes seconds); otherwise one is built with ``include_path``. The public tasks'
    datasets come from the Hugging Face hub on first use (then from the datasets cache).
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the discriminative benchmark needs lm-evaluation-harness: pip install 'bfpo[eval]' (lm-eval>=0.4.5,<0.5)"
        ) from exc
    if Path(model_dir).exists() and not (Path(model_dir) / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a model directory (no config.json)")
    tasks = list(tasks or DISC_TASKS)
    manager = task_manager or TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-eval {getattr(lm_eval, '__version__', '?')} does not know task(s) {unknown}")
    try:
        output = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": str(model_dir), "dtype": dtype},
            tasks=tasks,
            batch_size=batch_size,
            device=device,
            limit=limit,
            task_manager=manager,
            log_samples=False,
            bootstrap_iters=0,
        )
    except ConnectionError as exc:
        raise ConnectionError(
            f"{exc}. The lm-eval task datasets come from the Hugging Face hub: run once with the "
            "hub reachable (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE unset) to fill the datasets "
            "cache; later runs work offline."
        ) from exc
    if output is None:
        raise RuntimeError("lm_eval.simple_evaluate returned no results (non-zero rank?)")
    return extract_results(output["results"], tasks, crows=crows)
