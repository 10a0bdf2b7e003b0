"""``bfpo judge``: score saved answers with a judge, and measure judges against hand labels.

Two uses:

* ``bfpo judge --input GENERATIONS.jsonl --judge NAME --output_file RESULT.json`` judges (prompt, response) rows that
  were generated earlier (by ``bfpo evaluate``, which writes ``<out>.generations.jsonl`` next to its
  RESULT.json, or by anything else) and writes a RESULT.json with the same keys as ``bfpo evaluate``'s, so
  ``bfpo report`` reads it. Generate once on a CPU, score later with a model judge on a GPU.
* ``bfpo judge --labels FILE`` prints each judge's precision, recall and accuracy for refusal and for
  harmful content against hand labels. ``--labels shipped`` uses the shipped judge-evaluation set
  (``bfpo/data/judge_eval/labelled.jsonl``, described in docs/judges.md), by default its held-out ``test``
  part.

A generations row is ``{"prompt", "response", "kind"?, "category"?, "source"?, "model"?}`` (``kind`` is
"harmful" or "benign", default "harmful"). A labelled row adds ``"refusal"`` and ``"harmful"`` (true/false)
and may carry ``"split"``. An evaluate RESULT.json (its ``samples``) is accepted as input too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bfpo.args import choices
from bfpo.data.records import DataValidationError
from bfpo.eval.judges import DEFAULT_JUDGE, JUDGE_NAMES
from bfpo.figures import fmt_rate, markdown_table
from bfpo.files import iter_jsonl, read_text_checked

KINDS = ("harmful", "benign")
LABELS = ("refusal", "harmful")
#: the shipped judge-evaluation set, inside the package
LABELLED_SET = "labelled.jsonl"
#: splits of the shipped set: judges were developed on "dev" only; "test" is held out
SPLITS = ("dev", "test", "all")


def generations_path(result_path: str) -> Path:
    """Where ``bfpo evaluate --output_file RESULT.json`` puts its generations: ``RESULT.generations.jsonl``."""
    p = Path(result_path)
    return p.with_name(p.stem + ".generations.jsonl")


def write_generations(samples: Sequence[Dict[str, Any]], path: str, model: str) -> Path:
    """One jsonl row per answer: ``{"prompt", "response", "kind", "category", "source", "model"}``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for s in samples:
            row = {
                "prompt": s["prompt"],
                "response": s["response"],
                "kind": s.get("kind", "harmful"),
                "category": s.get("category", "uncategorized"),
                "source": s.get("source", ""),
                "model": model,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out


def _check_row(row: Any, where: str, need_labels: bool) -> Dict[str, Any]:
    if not isinstance(row, dict):
        raise DataValidationError(f"{where}: expected a JSON object")
    for key in ("prompt", "response"):
        if not isinstance(row.get(key), str):
            raise DataValidationError(f"{where}: field '{key}' missing or not a string")
    if not row["prompt"].strip():
        raise DataValidationError(f"{where}: field 'prompt' is empty")
    kind = row.get("kind") or "harmful"
    if kind not in KINDS:
        raise DataValidationError(f"{where}: field 'kind' must be harmful or benign, got {kind!r}")
    out = {
        **row,
        "kind": kind,
        "category": str(row.get("category") or "uncategorized"),
        "source": str(row.get("source") or ""),
    }
    if need_labels:
        for key in LABELS:
            if not isinstance(row.get(key), bool):
                raise DataValidationError(f"{where}: label '{key}' must be true or false, got {row.get(key)!r}")
    return out


def read_rows(path: str, need_labels: bool = False) -> List[Dict[str, Any]]:
    """Rows of a generations / labels jsonl, or the ``samples`` of an evaluate RESULT.json; validated."""
    if Path(path).suffix == ".json":
        try:
            doc = json.loads(read_text_checked(path))
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
            raise DataValidationError(f"{path}: a .json input must be a bfpo evaluate RESULT.json with 'samples'")
        raw = [(f"{path} samples[{i}]", r) for i, r in enumerate(doc["samples"])]
    else:
        raw = [(f"{path} line {n}", row) for n, row in iter_jsonl(path)]
    rows = [_check_row(r, where, need_labels) for where, r in raw]
    if not rows:
        raise DataValidationError(f"{path}: no rows")
    return rows


def shipped_labels_path() -> Path:
    """Path of the shipped labelled judge-evaluation set."""
    return Path(str(resources.files("bfpo.data").joinpath("judge_eval", LABELLED_SET)))


def load_labelled(path: Optional[str] = None, split: str = "test") -> List[Dict[str, Any]]:
    """The labelled rows of ``path`` (default: the shipped set) in ``split`` ("dev", "test" or "all").

    Rows without a ``split`` field count as "test" (a user's own labels are all held out from our judges).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rows = read_rows(str(path or shipped_labels_path()), need_labels=True)
    return [r for r in rows if split == "all" or r.get("split", "test") == split]


def split_key(prompt: str, source: str) -> str:
    """One prompt's rank key in the split rule of the shipped set: ``sha256(source + newline + prompt)``."""
    return hashlib.sha256(f"{source}\n{prompt}".encode("utf-8")).hexdigest()


def assign_splits(rows: Sequence[Dict[str, Any]], test_fraction: float = 0.5) -> Dict[str, str]:
    """The split rule of the shipped set (docs/judges.md): ``{prompt: "dev"|"test"}``.

    Within each (source, kind) stratum the distinct prompts are ordered by :func:`split_key` and the first
    ``round(test_fraction * n)`` go to "test", the rest to "dev". Every answer to a prompt (one per model)
    shares the prompt's split, so no prompt is seen in both parts."""
    strata: Dict[tuple, set] = {}
    for r in rows:
        strata.setdefault((r["source"], r["kind"]), set()).add(r["prompt"])
    out: Dict[str, str] = {}
    for (source, _), prompts in sorted(strata.items()):
        ordered = sorted(prompts, key=lambda p: split_key(p, source))
        n_test = round(test_fraction * len(ordered))
        for i, p in enumerate(ordered):
            out[p] = "test" if i < n_test else "dev"
    return out


def binary_metrics(pred: Sequence[Optional[bool]], gold: Sequence[bool]) -> Dict[str, Any]:
    """Precision, recall and accuracy of ``pred`` against ``gold`` (positive = True).

    A prediction of None (unparsed) counts as wrong in accuracy and is reported as ``unparsed``; precision
    and recall use the parsed predictions. A ratio with a zero denominator is None.
    """
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions but {len(gold)} labels")
    tp = sum(1 for p, g in zip(pred, gold) if p is True and g)
    fp = sum(1 for p, g in zip(pred, gold) if p is True and not g)
    fn = sum(1 for p, g in zip(pred, gold) if p is False and g)
    tn = sum(1 for p, g in zip(pred, gold) if p is False and not g)
    unparsed = sum(1 for p in pred if p is None)
    n = len(gold)
    return {
        "n": n,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "unparsed": unparsed,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "accuracy": (tp + tn) / n if n else None,
    }


def judge_rows(rows: Sequence[Dict[str, Any]], judge) -> List[Dict[str, Any]]:
    """``rows`` with a ``verdict`` dict each, from one call of ``judge.judge``."""
    verdicts = judge.judge([r["prompt"] for r in rows], [r["response"] for r in rows], kinds=[r["kind"] for r in rows])
    return [{**r, "verdict": v.to_dict()} for r, v in zip(rows, verdicts)]


def measure(rows: Sequence[Dict[str, Any]], judge) -> Dict[str, Dict[str, Any]]:
    """``{"refusal": metrics, "harmful": metrics}`` of ``judge`` on labelled ``rows``."""
    judged = judge_rows(rows, judge)
    return {
        label: binary_metrics([s["verdict"][label] for s in judged], [bool(r[label]) for r in rows]) for label in LABELS
    }


def metrics_table(results: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    """A markdown table: one line per judge, refusal and harmful precision / recall / accuracy."""
    header = [
        "judge",
        "n",
        "refusal P",
        "refusal R",
        "refusal acc",
        "harmful P",
        "harmful R",
        "harmful acc",
        "unparsed",
    ]
    rows = []
    for name, m in results.items():
        r, h = m["refusal"], m["harmful"]
        rows.append(
            [name, r["n"]]
            + [fmt_rate(x[k], 3, "n/a") for x in (r, h) for k in ("precision", "recall", "accuracy")]
            + [h["unparsed"]]
        )
    return markdown_table(header, rows)


def judge_file(
    input_path: str, judge_name: str, out: Optional[str] = None, judge_model: Optional[str] = None, judge_obj=None
) -> Dict[str, Any]:
    """Judge a saved generations file and write a RESULT.json (``bfpo evaluate``'s keys) to ``out``."""
    from bfpo.eval.evaluate import aggregate
    from bfpo.eval.judges import get_judge

    rows = read_rows(input_path)
    judge = judge_obj or get_judge(judge_name, judge_model)
    samples = judge_rows(rows, judge)
    models = sorted({str(r.get("model")) for r in rows if r.get("model")})
    result: Dict[str, Any] = {
        "model": models[0] if len(models) == 1 else models,
        "judge": judge.name,
        "judge_model": judge_model,
        "generations": input_path,
    }
    result.update(aggregate(samples))
    result["samples"] = samples
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


@dataclass
class JudgeArguments:
    """Settings of ``bfpo judge``."""

    input: Optional[str] = field(
        default=None,
        metadata={
            "help": "generations jsonl (or an evaluate RESULT.json) to judge into --output_file (or give --labels)"
        },
    )
    labels: Optional[str] = field(
        default=None,
        metadata={
            "help": "measure judges against the hand labels of this jsonl; 'shipped' = the shipped judge-evaluation "
            "set (docs/judges.md)"
        },
    )
    judge: Optional[str] = choices(
        *JUDGE_NAMES, default=None, help=f"the judge (default {DEFAULT_JUDGE}); with --labels: measure only this one"
    )
    judges: Optional[List[str]] = field(
        default=None,
        metadata={
            "help": "--labels: the judges to measure (default: the offline ones, or --judge)",
            "choices": JUDGE_NAMES,
        },
    )
    judge_model: Optional[str] = field(
        default=None, metadata={"help": "model folder or hub name of a model judge (default: the judge's own)"}
    )
    output_file: Optional[str] = field(
        default=None,
        metadata={"help": "--input: the RESULT.json to write (required); --labels: a json of the metrics (optional)"},
    )
    split: str = choices(
        *SPLITS, default="test", help="--labels: which part of the set (rows without a split count as test)"
    )

    def __post_init__(self):
        if (self.input is None) == (self.labels is None):
            raise ValueError("give exactly one of --input (generations to judge) or --labels (FILE or 'shipped')")
        if self.input is not None and not self.output_file:
            raise ValueError("--input needs --output_file RESULT.json")
        if self.input is not None and self.judges:
            raise ValueError("--input takes one --judge (--judges is for --labels)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    from bfpo.args import parse
    from bfpo.eval.evaluate import summary
    from bfpo.eval.judges import OFFLINE_JUDGES, get_judge

    (a,) = parse(
        [JudgeArguments], argv, prog="bfpo judge", description=__doc__.split("\n\n")[0], path_fields=("input", "labels")
    )
    if a.input is not None:
        result = judge_file(a.input, a.judge or DEFAULT_JUDGE, a.output_file, a.judge_model)
        print(summary(result).replace("evaluate:", "judge:", 1) + f" -> {a.output_file}")
        return
    path = None if a.labels == "shipped" else a.labels
    rows = load_labelled(path, a.split)
    if not rows:
        raise DataValidationError(f"no labelled rows in split {a.split!r} of {path or shipped_labels_path()}")
    names = a.judges or ([a.judge] if a.judge else list(OFFLINE_JUDGES))
    results = {n: measure(rows, get_judge(n, a.judge_model)) for n in names}
    print(f"{path or shipped_labels_path()} [{a.split}]: {len(rows)} rows")
    print(metrics_table(results))
    if a.output_file:
        Path(a.output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output_file).write_text(
            json.dumps({"labels": str(path or shipped_labels_path()), "split": a.split, "judges": results}, indent=2)
            + "\n",
            encoding="utf-8",
        )
