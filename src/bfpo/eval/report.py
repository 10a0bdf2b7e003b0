"""``bfpo report --results RESULT.json ... --output_dir DIR``: a Table-6-style markdown table and a
Figure-5-style scatter.

Reads the RESULT.json files written by ``bfpo evaluate`` (any key may be missing) and writes

* ``DIR/report.md``: one row per model; columns = helpfulness (AlpacaEval LC win rate when the result has a
  score, and the offline proxy "benign answered %" = 100 * (1 - benign refusal rate)), the discriminative
  tasks and Disc. Avg. (Table 6 rows, in percent; CrowS-Pairs is pct_stereotype, lower is less biased, and
  enters Disc. Avg. as the paper does, see :mod:`bfpo.eval.lm_eval_tasks`), the generative tasks (harmless %) and
  Gen. Avg., and Safety Avg. (the mean of Disc. Avg. and Gen. Avg., section 4.1).
* ``DIR/scatter.png``: helpfulness (x) against harmlessness (y), one labelled point per model, as Figure 5.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bfpo.errors import UserInputError, UserPathNotFoundError
from bfpo.eval.lm_eval_tasks import DISC_TASKS, DISPLAY_NAMES, is_crows
from bfpo.eval.promptsets import suite_of
from bfpo.figures import MISSING, fmt_rate, markdown_table, save_figure, subplots

_ALPACA_KEYS = ("length_controlled_winrate", "lc_win_rate", "lc_winrate", "win_rate", "score")


#: RESULT.json keys the report reads, and the JSON types each may have (null is always allowed)
RESULT_TYPES = {
    "by_kind": (dict,),
    "by_category": (dict,),
    "gen": (dict,),
    "disc": (dict,),
    "alpaca": (dict, int, float),
    "gen_avg": (int, float),
    "disc_avg": (int, float),
    "safety_avg": (int, float),
    "samples": (list,),
    "model": (str, list),
}


def load_result(path: str) -> Dict[str, Any]:
    """Read one RESULT.json (a JSON object with the keys of :data:`RESULT_TYPES` in their types); every
    error is one line naming the file (and the key)."""
    from bfpo.files import read_text_utf8

    p = Path(path)
    if p.is_dir():
        found = sorted(str(x) for x in p.glob("*.json"))[:3]
        raise UserInputError(
            f"{path} is a folder; pass the RESULT.json file(s) written by 'bfpo evaluate'"
            + (f" (e.g. {', '.join(found)})" if found else "")
        )
    if not p.is_file():
        raise UserPathNotFoundError(f"result file {path} not found")
    try:
        data = json.loads(read_text_utf8(p))
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UserInputError(
            f"{path}: expected a JSON object (a RESULT.json of 'bfpo evaluate'), got {type(data).__name__}"
        )
    for key, types in RESULT_TYPES.items():
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            expected = " or ".join(
                {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number"}[t] for t in types
            )
            raise UserInputError(f"{path}: key '{key}' must be {expected}, got {type(value).__name__}")
    for key in ("by_kind", "by_category"):
        for name, entry in (data.get(key) or {}).items():
            if not isinstance(entry, dict):
                raise UserInputError(f"{path}: key '{key}.{name}' must be an object, got {type(entry).__name__}")
    return data


def empty_answers(result: Dict[str, Any]) -> int:
    """How many answers of a result are empty (from ``empty_answers``, else counted in ``samples``)."""
    count = _num(result.get("empty_answers"))
    if count is not None:
        return int(count)
    samples = result.get("samples") or []
    return sum(1 for s in samples if isinstance(s, dict) and not str(s.get("response") or "").strip())


def _num(x: Any) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def alpaca_score(result: Dict[str, Any]) -> Optional[float]:
    """AlpacaEval LC win rate (percent) if the result carries one: a number, or a dict with a known key."""
    alpaca = result.get("alpaca")
    if _num(alpaca) is not None:
        return _num(alpaca)
    if isinstance(alpaca, dict):
        for key in _ALPACA_KEYS:
            if _num(alpaca.get(key)) is not None:
                return _num(alpaca[key])
    return None


def benign_answered(result: Dict[str, Any]) -> Optional[float]:
    """Offline helpfulness proxy: percent of benign prompts not refused."""
    rate = _num(((result.get("by_kind") or {}).get("benign") or {}).get("refusal_rate"))
    return None if rate is None else 100.0 * (1.0 - rate)


def disc_tasks(result: Dict[str, Any]) -> Dict[str, float]:
    """``{task: value in percent}`` from lm-eval fractions; ``disc`` may be ``{"tasks": {...}}`` or the tasks
    mapping."""
    disc = result.get("disc") or {}
    tasks = disc.get("tasks", disc) if isinstance(disc, dict) else {}
    out = {}
    for name, entry in tasks.items():
        value = _num(entry.get("value")) if isinstance(entry, dict) else _num(entry)
        if value is not None:
            out[name] = 100.0 * value
    return out


def disc_avg(result: Dict[str, Any]) -> Optional[float]:
    top = _num(result.get("disc_avg"))
    if top is not None:
        return top
    disc = result.get("disc")
    return _num(disc.get("disc_avg")) if isinstance(disc, dict) else None


def gen_tasks(result: Dict[str, Any]) -> Dict[str, float]:
    """``{label: harmless %}`` with source strings shortened to suite names (``rtp:threat`` per file)."""
    gen = result.get("gen") or {}
    return {suite_of(k, per_file=True): float(v) for k, v in gen.items() if _num(v) is not None}


def safety_avg(result: Dict[str, Any]) -> Optional[float]:
    top = _num(result.get("safety_avg"))
    if top is not None:
        return top
    d, g = disc_avg(result), _num(result.get("gen_avg"))
    return None if d is None or g is None else (d + g) / 2


def harmlessness(result: Dict[str, Any]) -> Tuple[Optional[float], str]:
    """Best available harmlessness score: Safety Avg., else Gen. Avg., else harmful harmless rate."""
    for value, label in ((safety_avg(result), "Safety Avg."), (_num(result.get("gen_avg")), "Gen. Avg.")):
        if value is not None:
            return value, label
    rate = _num(((result.get("by_kind") or {}).get("harmful") or {}).get("harmless_rate"))
    return (None, "") if rate is None else (100.0 * rate, "harmless % on harmful prompts")


def _ordered_union(keys_per_model: Sequence[Sequence[str]], preferred: Sequence[str] = ()) -> List[str]:
    seen = [k for k in preferred if any(k in ks for ks in keys_per_model)]
    for ks in keys_per_model:
        seen += [k for k in ks if k not in seen]
    return seen


def build_table(results: Sequence[Dict[str, Any]], names: Sequence[str]) -> Tuple[List[str], List[List[str]]]:
    """Header and rows (strings) of the Table-6-style table, one row per model."""
    dtasks = [disc_tasks(r) for r in results]
    gtasks = [gen_tasks(r) for r in results]
    dcols = _ordered_union([list(d) for d in dtasks], DISC_TASKS)
    gcols = _ordered_union([list(g) for g in gtasks])
    header = ["Model"]
    with_alpaca = any(alpaca_score(r) is not None for r in results)
    if with_alpaca:
        header.append("Alpaca")
    header.append("Benign answered %")
    header += [DISPLAY_NAMES.get(t, t) + (" (stereotype %, ↓)" if is_crows(t) else "") for t in dcols]
    header += ["Disc. Avg."] + [f"{g} (harmless %)" for g in gcols] + ["Gen. Avg.", "Safety Avg."]
    rows = []
    for r, name, d, g in zip(results, names, dtasks, gtasks):
        row = [name] + ([fmt_rate(alpaca_score(r))] if with_alpaca else []) + [fmt_rate(benign_answered(r))]
        row += [fmt_rate(d.get(t)) for t in dcols] + [fmt_rate(disc_avg(r))]
        row += [fmt_rate(g.get(t)) for t in gcols] + [fmt_rate(_num(r.get("gen_avg"))), fmt_rate(safety_avg(r))]
        rows.append(row)
    return header, rows


def scatter(results: Sequence[Dict[str, Any]], names: Sequence[str], path: Path) -> List[str]:
    """Figure-5-style plot; returns notes about models left out (no score on an axis)."""
    use_alpaca = all(alpaca_score(r) is not None for r in results)
    xlabel = "Helpfulness: AlpacaEval LC win rate (%)" if use_alpaca else "Helpfulness: benign prompts answered (%)"
    points, notes, ylabels = [], [], set()
    for r, name in zip(results, names):
        x = alpaca_score(r) if use_alpaca else benign_answered(r)
        y, ylabel = harmlessness(r)
        if x is None or y is None:
            notes.append(f"{name}: left out of the scatter (no {'helpfulness' if x is None else 'harmlessness'} score)")
            continue
        points.append((name, x, y))
        ylabels.add(ylabel)
    fig, ax = subplots(figsize=(6, 4.5))
    for name, x, y in points:
        ax.scatter([x], [y], s=60)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Harmlessness: " + (" / ".join(sorted(ylabels)) if ylabels else "no data") + " (%)")
    ax.set_title("Helpfulness vs harmlessness")
    ax.grid(True, alpha=0.3)
    if points:
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        pad_x, pad_y = max(2.0, 0.1 * (max(xs) - min(xs))), max(2.0, 0.1 * (max(ys) - min(ys)))
        ax.set_xlim(min(xs) - pad_x, max(xs) + 2 * pad_x)
        ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    save_figure(fig, path, dpi=120)
    return notes


def write_report(paths: Sequence[str], out_dir: str, names: Optional[Sequence[str]] = None) -> Path:
    """Write ``report.md`` and ``scatter.png`` for the given RESULT.json files; return the markdown path."""
    if not paths:
        raise UserInputError("report needs at least one RESULT.json")
    results = [load_result(p) for p in paths]
    if names and len(names) != len(paths):
        raise UserInputError(f"--names has {len(names)} names for {len(paths)} --results files")
    labels = list(names) if names else [str(r.get("model") or Path(p).stem) for r, p in zip(results, paths)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = build_table(results, labels)
    notes = scatter(results, labels, out / "scatter.png")
    text = [
        "# bfpo evaluation report",
        "",
        "Rows are models. Helpfulness: Alpaca = AlpacaEval 2.0 LC win rate (when present); "
        "Benign answered % = 100 x (1 - refusal rate on benign prompts), the offline proxy. "
        "Discriminative tasks in percent (accuracy; CrowS-Pairs = % stereotyped choices, lower is less "
        "biased, averaged as in Table 6). Generative tasks = % harmless answers to harmful prompts. "
        "Safety Avg. = mean of Disc. Avg. and Gen. Avg. (section 4.1). "
        f"'{MISSING}' = not measured.",
        "",
        markdown_table(header, rows),
        "",
        "![helpfulness vs harmlessness](scatter.png)",
        "",
    ]
    for r, label in zip(results, labels):
        n_empty = empty_answers(r)
        if n_empty:
            notes.append(
                f"WARNING {label}: {n_empty} of {len(r.get('samples') or []) or '?'} answers are empty "
                "(a broken or diverged model?); results written before bfpo flagged this count them "
                "as harmless"
            )
            print(f"report: {notes[-1]}", file=sys.stderr)
    text += [f"- {n}" for n in notes]
    text += ["", "Sources: " + ", ".join(f"`{p}`" for p in paths), ""]
    md = out / "report.md"
    md.write_text("\n".join(text), encoding="utf-8")
    return md


@dataclass
class ReportArguments:
    """Settings of ``bfpo report``."""

    results: List[str] = field(
        metadata={"help": "RESULT.json files written by 'bfpo evaluate' or 'bfpo judge' (required)"}
    )
    output_dir: str = field(metadata={"help": "folder for report.md and scatter.png (required)"})
    names: Optional[List[str]] = field(
        default=None, metadata={"help": "display names, one per result file (default: each result's 'model')"}
    )


def main(argv: Optional[Sequence[str]] = None) -> Path:
    from bfpo.args import parse

    (a,) = parse(
        [ReportArguments], argv, prog="bfpo report", description=__doc__.split("\n\n")[0], path_fields=("results",)
    )
    md = write_report(a.results, a.output_dir, a.names)
    print(f"report: {md} and {md.parent / 'scatter.png'}")
    return md
