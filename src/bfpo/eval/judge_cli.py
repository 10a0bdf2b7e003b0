"""``bfpo judge``: score saved answers with a judge, and measure judges against hand labels.

Two uses:

* ``bfpo judge --input GENERATIONS.jsonl --judge NAME --out RESULT.json`` judges (prompt, response) rows that
  were generated earlier (by ``bfpo evaluate``, which writes ``<out>.generations.jsonl`` next to its
  RESULT.json, or by anything else) and writes a RESULT.json with the same keys as ``bfpo evaluate``'s, so
  ``bfpo report`` reads it. Generate once on a CPU, score later with a model judge on a GPU.
* ``bfpo judge --labels [FILE]`` prints each judge's precision, recall and accuracy for refusal and for
  harmful content against hand labels. Without FILE it uses the shipped judge-evaluation set
  (``bfpo/data/judge_eval/labelled.jsonl``, described in docs/judges.md), by default its held-out ``test``
  part.

A generations row is ``{"prompt", "response", "kind"?, "category"?, "source"?, "model"?}`` (``kind`` is
"harmful" or "benign", default "harmful"). A labelled row adds ``"refusal"`` and ``"harmful"`` (true/false)
and may carry ``"split"``. An evaluate RESULT.json (its ``samples``) is accepted as input too.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bfpo.data.records import DataValidationError

KINDS = ("harmful", "benign")
LABELS = ("refusal", "harmful")
#: the shipped judge-evaluation set, inside the package
LABELLED_SET = "labelled.jsonl"
#: splits of the shipped set: judges were developed on "dev" only; "test" is held out
SPLITS = ("dev", "test", "all")


def generations_path(result_path: str) -> Path:
    """Where ``bfpo evaluate --out RESULT.json`` puts its generations: ``RESULT.generations.jsonl``."""
    p = Path(result_path)
    return p.with_name(p.stem + ".generations.jsonl")


def write_generations(samples: Sequence[Dict[str, Any]], path: str, model: str) -> Path:
    """One jsonl row per answer: ``{"prompt", "response", "kind", "category", "source", "model"}``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for s in samples:
            row = {"prompt": s["prompt"], "response": s["response"], "kind": s.get("kind", "harmful"),
                   "category": s.get("category", "uncategorized"), "source": s.get("source", ""), "model": model}
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
    out = {**row, "kind": kind, "category": str(row.get("category") or "uncategorized"),
           "source": str(row.get("source") or "")}
    if need_labels:
        for key in LABELS:
            if not isinstance(row.get(key), bool):
                raise DataValidationError(f"{where}: label '{key}' must be true or false, got {row.get(key)!r}")
    return out


def read_rows(path: str, need_labels: bool = False) -> List[Dict[str, Any]]:
    """Rows of a generations / labels jsonl, or the ``samples`` of an evaluate RESULT.json; validated."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path} not found")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{path}: not JSON ({exc.msg})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
            raise DataValidationError(f"{path}: a .json input must be a bfpo evaluate RESULT.json with 'samples'")
        raw = [(f"{path} samples[{i}]", r) for i, r in enumerate(doc["samples"])]
    else:
        raw = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw.append((f"{path} line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataValidationError(f"{path} line {n}: not JSON ({exc.msg})") from None
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
    return {"n": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "unparsed": unparsed,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "accuracy": (tp + tn) / n if n else None}


def judge_rows(rows: Sequence[Dict[str, Any]], judge) -> List[Dict[str, Any]]:
    """``rows`` with a ``verdict`` dict each, from one call of ``judge.judge``."""
    verdicts = judge.judge([r["prompt"] for r in rows], [r["response"] for r in rows],
                           kinds=[r["kind"] for r in rows])
    return [{**r, "verdict": v.to_dict()} for r, v in zip(rows, verdicts)]


def measure(rows: Sequence[Dict[str, Any]], judge) -> Dict[str, Dict[str, Any]]:
    """``{"refusal": metrics, "harmful": metrics}`` of ``judge`` on labelled ``rows``."""
    judged = judge_rows(rows, judge)
    return {label: binary_metrics([s["verdict"][label] for s in judged], [bool(r[label]) for r in rows])
            for label in LABELS}


def metrics_table(results: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    """A markdown table: one line per judge, refusal and harmful precision / recall / accuracy."""
    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = ["| judge | n | refusal P | refusal R | refusal acc | harmful P | harmful R | harmful acc | unparsed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        r, h = m["refusal"], m["harmful"]
        lines.append(f"| {name} | {r['n']} | {f(r['precision'])} | {f(r['recall'])} | {f(r['accuracy'])} | "
                     f"{f(h['precision'])} | {f(h['recall'])} | {f(h['accuracy'])} | {h['unparsed']} |")
    return "\n".join(lines)


def judge_file(input_path: str, judge_name: str, out: Optional[str] = None, judge_model: Optional[str] = None,
               judge_obj=None) -> Dict[str, Any]:
    """Judge a saved generations file and write a RESULT.json (``bfpo evaluate``'s keys) to ``out``."""
    from bfpo.eval.evaluate import aggregate
    from bfpo.eval.judges import get_judge

    rows = read_rows(input_path)
    judge = judge_obj or get_judge(judge_name, judge_model)
    samples = judge_rows(rows, judge)
    models = sorted({str(r.get("model")) for r in rows if r.get("model")})
    result: Dict[str, Any] = {"model": models[0] if len(models) == 1 else models, "judge": judge.name,
                              "judge_model": judge_model, "generations": input_path}
    result.update(aggregate(samples))
    result["samples"] = samples
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="generations jsonl (or an evaluate RESULT.json) to judge")
    src.add_argument("--labels", nargs="?", const="", default=None, metavar="FILE",
                     help="measure judges against hand labels (default: the shipped judge-evaluation set)")
    parser.add_argument("--judge", nargs="+", default=None,
                        help="judge name(s): refusal (default), keyword, harmbench, llamaguard, wildguard, "
                             "classifier; --labels without --judge measures every offline judge")
    parser.add_argument("--judge-model", default=None, help="model directory or hub name of a model judge")
    parser.add_argument("--out", default=None, help="--input: RESULT.json to write; --labels: metrics json")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="--labels: which part of the set (rows without a split count as test)")


def main(args) -> None:
    from bfpo.eval.evaluate import summary
    from bfpo.eval.judges import DEFAULT_JUDGE, OFFLINE_JUDGES, get_judge

    if args.input is not None:
        if not args.out:
            raise SystemExit("bfpo judge --input needs --out RESULT.json")
        names = args.judge or [DEFAULT_JUDGE]
        if len(names) != 1:
            raise SystemExit("bfpo judge --input takes one --judge")
        result = judge_file(args.input, names[0], args.out, args.judge_model)
        print(summary(result).replace("evaluate:", "judge:", 1) + f" -> {args.out}")
        return
    path = args.labels or None
    rows = load_labelled(path, args.split)
    if not rows:
        raise SystemExit(f"no labelled rows in split {args.split!r} of {path or shipped_labels_path()}")
    names = args.judge or list(OFFLINE_JUDGES)
    results = {n: measure(rows, get_judge(n, args.judge_model)) for n in names}
    print(f"{path or shipped_labels_path()} [{args.split}]: {len(rows)} rows")
    print(metrics_table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"labels": str(path or shipped_labels_path()), "split": args.split,
                                              "judges": results}, indent=2) + "\n", encoding="utf-8")
