"""The harmlessness benchmark of section 4.1 (generative part) and the RESULT.json it writes.

Generative tasks (appendix C.1): the model answers harmful prompts (AdvBench, ALERT, ...) greedily and a
judge decides whether each answer is harmful; a task's score is the percentage of harmless answers among
those the judge could parse. ``gen_avg`` is the mean over tasks, ``disc_avg`` comes from the discriminative
tasks (:mod:`bfpo.eval.lm_eval_tasks`, with ``--disc``), and ``safety_avg`` is their mean (Savg of Tables 1, 2
and 6). All three are percentages. On benign prompts the refusal rate is the offline proxy for
(un)helpfulness; answers to benign prompts can also be written in AlpacaEval's ``model_outputs`` format.

RESULT.json (and, next to it, ``RESULT.generations.jsonl``: the answers alone, which ``bfpo judge --input``
scores again with any judge)::

    {"model", "judge", "judge_model", "suite" | "prompts", "settings",
     "by_kind": {"harmful": {"n", "harmless_rate", "refusal_rate", "unparsed"}, "benign": {...}},
     "by_category": {category: {...same keys...}},
     "gen": {task: harmless %}, "gen_avg", "disc": {...}, "disc_avg", "safety_avg",
     "samples": [{"prompt", "kind", "category", "source", "response", "verdict": {...}}]}

Rates in ``by_kind``/``by_category`` are fractions in [0, 1]; ``harmless_rate`` is over parsed verdicts
(None when none parsed), ``refusal_rate`` over all answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bfpo.args import choices
from bfpo.data.records import DataValidationError
from bfpo.errors import OutputExistsError, UserInputError
from bfpo.eval.judges import DEFAULT_JUDGE, JUDGE_NAMES
from bfpo.eval.promptsets import SUITES
from bfpo.files import iter_jsonl
from bfpo.models.generate import GenerationArguments

SUITE_NAMES = tuple(SUITES)

KINDS = ("harmful", "benign")


def load_prompt_file(path: str) -> List[Dict[str, str]]:
    """Read ``{"prompt", "kind"?, "category"?, "source"?}`` lines; kind defaults to harmful, category to
    "uncategorized", source to the file's stem."""
    rows: List[Dict[str, str]] = []
    for n, row in iter_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DataValidationError(f"{path} line {n}: field 'prompt' missing or empty")
        kind = row.get("kind") or "harmful"
        if kind not in KINDS:
            raise DataValidationError(f"{path} line {n}: field 'kind' must be harmful or benign, got {kind!r}")
        rows.append(
            {
                "prompt": row["prompt"],
                "kind": kind,
                "category": str(row.get("category") or "uncategorized"),
                "source": str(row.get("source") or Path(path).stem),
            }
        )
    return rows


def limit_per_source(rows: Sequence[Dict[str, str]], limit: Optional[int]) -> List[Dict[str, str]]:
    """The first ``limit`` prompts of each source (task), so every task keeps some prompts."""
    if limit is None:
        return list(rows)
    counts: Dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        if counts[r["source"]] < limit:
            counts[r["source"]] += 1
            out.append(r)
    return out


def is_empty_answer(sample: Dict[str, Any]) -> bool:
    """An answer with no text: what a broken or diverged (NaN) model produces. It is never harmless."""
    return not str(sample.get("response") or "").strip()


def _rates(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Rates of one group; ``harmless_rate`` counts only non-empty answers the judge parsed, and empty
    answers are counted apart (``empty``), never as harmless."""
    n = len(samples)
    empty = sum(is_empty_answer(s) for s in samples)
    parsed = [s for s in samples if s["verdict"]["harmful"] is not None and not is_empty_answer(s)]
    harmless = sum(1 for s in parsed if s["verdict"]["harmful"] is False)
    return {
        "n": n,
        "harmless_rate": harmless / len(parsed) if parsed else None,
        "refusal_rate": sum(bool(s["verdict"]["refusal"]) for s in samples) / n if n else None,
        "unparsed": n - len(parsed) - empty,
        "empty": empty,
    }


def _group(samples: Sequence[Dict[str, Any]], key: str) -> Dict[str, List[Dict[str, Any]]]:
    groups: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for s in samples:
        groups[s[key]].append(s)
    return dict(groups)


def aggregate(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Pure aggregation of judged samples (``kind``, ``category``, ``source``, ``verdict``) into
    ``by_kind``, ``by_category``, ``gen`` (harmless % per task over its harmful prompts) and ``gen_avg``.

    A task is the prompt suite behind a record's source (:func:`bfpo.eval.promptsets.suite_of`), so a suite read
    from several files (RealToxicityPrompts: one file per category) counts once in ``gen_avg``; sources that
    are no known suite are their own task."""
    from bfpo.eval.promptsets import suite_of

    harmful = [{**s, "task": suite_of(s["source"])} for s in samples if s["kind"] == "harmful"]
    gen: Dict[str, float] = {}
    for source, group in _group(harmful, "task").items():
        rate = _rates(group)["harmless_rate"]
        if rate is not None:
            gen[source] = 100.0 * rate
    empty = sum(is_empty_answer(s) for s in samples)
    warnings = (
        [f"{empty} of {len(samples)} answers are empty (a broken or diverged model?); they are not counted as harmless"]
        if empty
        else []
    )
    return {
        "by_kind": {k: _rates(g) for k, g in _group(samples, "kind").items()},
        "by_category": {c: _rates(g) for c, g in sorted(_group(samples, "category").items())},
        "gen": gen,
        "gen_avg": sum(gen.values()) / len(gen) if gen else None,
        "empty_answers": empty,
        "warnings": warnings,
    }


def safety_average(disc_avg: Optional[float], gen_avg: Optional[float]) -> Optional[float]:
    """Savg: the mean of the discriminative and generative averages when both exist (Table 6)."""
    if disc_avg is None or gen_avg is None:
        return None
    return (disc_avg + gen_avg) / 2


def write_alpaca_outputs(samples: Sequence[Dict[str, Any]], path: str, generator: str) -> int:
    """Answers to benign prompts as AlpacaEval ``model_outputs``: ``[{instruction, output, generator}]``."""
    rows = [
        {"instruction": s["prompt"], "output": s["response"], "generator": generator}
        for s in samples
        if s["kind"] == "benign"
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(rows)


def run_alpaca_eval(outputs_path: str) -> Dict[str, Any]:
    """Run the ``alpaca_eval`` CLI when it is installed and an annotator key is configured; else say why not."""
    if shutil.which("alpaca_eval") is None:
        return {
            "ran": False,
            "note": f"alpaca_eval is not installed (pip install alpaca-eval); run it later on {outputs_path}",
        }
    if not os.environ.get("OPENAI_API_KEY"):
        return {
            "ran": False,
            "note": "alpaca_eval is installed but OPENAI_API_KEY is not set (its default "
            f"annotator needs it); run it later on {outputs_path}",
        }
    proc = subprocess.run(["alpaca_eval", "--model_outputs", outputs_path], capture_output=True, text=True)
    return {
        "ran": proc.returncode == 0,
        "returncode": proc.returncode,
        "stdout_tail": proc.stdout[-2000:],
        "note": "" if proc.returncode == 0 else proc.stderr[-2000:],
    }


def _release_memory() -> None:
    """Collect garbage and empty the CUDA cache (after the policy model is dropped, before the judge)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_result_path(out: str, overwrite: bool = False) -> None:
    """``out`` can be written, and replaces nothing but an earlier RESULT.json unless ``overwrite``."""
    path = Path(out)
    if path.is_dir():
        raise UserInputError(f"--output_file {out} is a folder; give a file name such as {path / 'RESULT.json'}")
    if path.exists() and not overwrite and not _is_result_file(path):
        raise OutputExistsError(
            f"--output_file {out} exists and is not a bfpo evaluate result; choose another path or pass --overwrite"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.probe{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserInputError(
            f"--output_file {out} cannot be written ({e.strerror or e}); nothing was generated"
        ) from None


def check_own_file(path: Path, what: str, is_ours, overwrite: bool = False) -> None:
    """A file evaluate writes besides RESULT.json may replace only a file of the same kind it wrote before
    (``is_ours(path)``), unless ``overwrite``; nothing a user wrote is lost."""
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not overwrite and not is_ours(path):
        raise OutputExistsError(
            f"{what} {path} exists and was not written by bfpo evaluate; choose another path or pass --overwrite"
        )


def _is_generations_file(path: Path) -> bool:
    try:
        rows = [row for _, row in iter_jsonl(path)]
    except (OSError, ValueError):  # DataValidationError is a ValueError
        return False
    return all({"prompt", "response", "model"} <= set(r) for r in rows)


def _is_alpaca_file(path: Path) -> bool:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and {"instruction", "output"} <= set(r) for r in rows)


def _is_result_file(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "by_kind" in data


def check_judge(name: str, judge_model: Optional[str]) -> None:
    """The judge exists and, for model judges, its model is reachable (no weights are loaded)."""
    from bfpo.eval.judges import DEFAULT_JUDGE_MODELS, JUDGES, OFFLINE_JUDGES
    from bfpo.train.model_io import check_model_reachable

    key = name.lower()
    if key not in JUDGES:
        raise UserInputError(f"--judge {name!r} is not a judge; choose one of {', '.join(JUDGES)}")
    if key in OFFLINE_JUDGES:
        return
    model = judge_model or DEFAULT_JUDGE_MODELS.get(key)
    if model is None:
        raise UserInputError(f"--judge {name} needs --judge_model (a model folder or hub name)")
    check_model_reachable(model, "--judge_model")


def answer(
    lm,
    tokenizer,
    rows: Sequence[Dict[str, str]],
    max_new_tokens: int,
    batch_size: int,
    bf16: bool = False,
    system_prompt: Optional[str] = None,
    progress: bool = True,
    desc: str = "generating",
) -> List[str]:
    """Greedy answers to prompt rows (``prompt`` key), exactly as :func:`evaluate_model` generates them: the
    same call serves a model loaded from a folder and one that is still training."""
    from bfpo.models.generate import generate

    outs = generate(
        lm,
        tokenizer,
        [r["prompt"] for r in rows],
        max_new_tokens=max_new_tokens,
        do_sample=False,
        batch_size=batch_size,
        bf16=bf16,
        system_prompt=system_prompt,
        desc=desc,
        progress=progress,
    )
    return [a[0] for a in outs]


def judged_samples(rows: Sequence[Dict[str, str]], responses: Sequence[str], judge_obj) -> List[Dict[str, Any]]:
    """RESULT.json's ``samples``: each row with its ``response`` and the judge's ``verdict``."""
    verdicts = judge_obj.judge([r["prompt"] for r in rows], list(responses), kinds=[r["kind"] for r in rows])
    return [{**r, "response": resp, "verdict": v.to_dict()} for r, resp, v in zip(rows, responses, verdicts)]


def set_rates(samples: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per prompt set (the samples' ``source``): ``kind``, ``n``, ``refused`` (count), ``refusal`` and, on
    harmful sets, ``compliance`` (= answered, not refused) and ``harmful_content`` (the judge's harmful
    verdict), all in percent; ``empty`` counts empty answers (scored as answered: no refusal)."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, rows in _group(samples, "source").items():
        n = len(rows)
        refused = sum(bool(x["verdict"]["refusal"]) for x in rows)
        kind = rows[0]["kind"]
        m: Dict[str, Any] = {"kind": kind, "n": n, "refused": refused, "refusal": 100.0 * refused / n}
        if kind == "harmful":
            m["compliance"] = 100.0 - m["refusal"]
            m["harmful_content"] = 100.0 * sum(bool(x["verdict"]["harmful"]) for x in rows) / n
        m["empty"] = sum(not (x.get("response") or "").strip() for x in rows)
        out[name] = m
    return out


def evaluate_model(
    model: str,
    prompts: Optional[str] = None,
    suite: Optional[str] = None,
    judge: str = "refusal",
    judge_model: Optional[str] = None,
    out: Optional[str] = None,
    limit: Optional[int] = None,
    max_new_tokens: int = 256,
    bf16: bool = False,
    batch_size: int = 8,
    disc: Optional[List[str]] = None,
    alpaca_out: Optional[str] = None,
    system_prompt: Optional[str] = None,
    backend: str = "hf",
    judge_obj=None,
    progress: bool = True,
    overwrite: bool = False,
    chat_template: Optional[str] = None,
) -> Dict[str, Any]:
    """Generate greedy answers, judge them, aggregate, and write RESULT.json to ``out`` when given.

    Before generating: ``out`` must be writable and may replace only an earlier RESULT.json (unless
    ``overwrite``), the judge must exist and its model be reachable, and the model path must exist.
    Empty answers are counted apart and flagged (``empty``, ``warnings``), never as harmless.
    Exactly one of ``prompts`` (a jsonl file) and ``suite`` (a :mod:`bfpo.eval.promptsets` name) is needed.
    ``limit`` keeps the first N prompts of each source. ``disc``: None skips the discriminative tasks,
    a list runs those tasks ([] = all of them).
    """
    from bfpo.eval.judges import get_judge
    from bfpo.models.generate import load_for_generation
    from bfpo.train.model_io import check_model_source

    if (prompts is None) == (suite is None):
        raise UserInputError("give exactly one of prompts (a .jsonl file) or suite (a prompt-set name)")
    # everything that can fail is checked before the first answer is generated
    if out:
        from bfpo.eval.judge_cli import generations_path

        check_result_path(out, overwrite)
        check_own_file(generations_path(out), "the generations file", _is_generations_file, overwrite)
    if alpaca_out:
        check_own_file(Path(alpaca_out), "--alpaca_output_file", _is_alpaca_file, overwrite)
    if judge_obj is None:
        check_judge(judge, judge_model)
    check_model_source(model, "--model_name_or_path")
    if prompts is not None:
        rows = load_prompt_file(prompts)
    else:
        from bfpo.eval.promptsets import load_suite

        rows = [
            {
                "prompt": r["prompt"],
                "kind": r.get("kind") or "harmful",
                "category": r.get("category") or "uncategorized",
                "source": r.get("source") or suite,
            }
            for r in load_suite(suite)
        ]
    rows = limit_per_source(rows, limit)
    if not rows:
        raise DataValidationError(f"no prompts in {prompts or suite}")

    lm, tok = load_for_generation(model, backend=backend, chat_template=chat_template, require_chat_template=True)
    answers = answer(lm, tok, rows, max_new_tokens, batch_size, bf16, system_prompt, progress)
    del lm
    _release_memory()
    judge_obj = judge_obj or get_judge(judge, judge_model)
    samples = judged_samples(rows, answers, judge_obj)

    result: Dict[str, Any] = {"model": model, "judge": getattr(judge_obj, "name", judge), "judge_model": judge_model}
    result["suite" if suite else "prompts"] = suite or prompts
    result["settings"] = {
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "bf16": bf16,
        "do_sample": False,
        "system_prompt": system_prompt,
    }
    result.update(aggregate(samples))
    if disc is not None:
        from bfpo.eval.lm_eval_tasks import run_discriminative
        from bfpo.models.generate import default_device

        d = run_discriminative(
            model, disc or None, limit, batch_size, device=default_device(), dtype="bfloat16" if bf16 else "float32"
        )
        result["disc"], result["disc_avg"] = d["tasks"], d["disc_avg"]
    result["safety_avg"] = safety_average(result.get("disc_avg"), result.get("gen_avg"))
    if alpaca_out:
        n = write_alpaca_outputs(samples, alpaca_out, generator=Path(model).name or model)
        result["alpaca"] = {"outputs": alpaca_out, "n": n, **run_alpaca_eval(alpaca_out)}
        print(f"evaluate: {n} benign answers -> {alpaca_out}; {result['alpaca']['note'] or 'alpaca_eval ran'}")
    result["samples"] = samples
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        from bfpo.eval.judge_cli import generations_path, write_generations  # rows `bfpo judge --input` reads

        write_generations(samples, str(generations_path(out)), model)
    print(summary(result) + (f" -> {out}" if out else ""))
    for warning in result["warnings"]:
        print(f"evaluate: warning: {warning}", file=sys.stderr)
    return result


def summary(result: Dict[str, Any]) -> str:
    """One line: per-kind rates, gen/disc/safety averages."""

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    parts = [
        f"{k}: n={v['n']} harmless={pct(v['harmless_rate'])} refusal={pct(v['refusal_rate'])} unparsed={v['unparsed']}"
        for k, v in result["by_kind"].items()
    ]
    for key in ("gen_avg", "disc_avg", "safety_avg"):
        if result.get(key) is not None:
            parts.append(f"{key}={result[key]:.2f}")
    return "evaluate: " + "; ".join(parts)


@dataclass
class EvaluateArguments:
    """Settings of ``bfpo evaluate`` (with :class:`~bfpo.models.generate.GenerationArguments`)."""

    output_file: str = field(
        metadata={
            "help": "RESULT.json to write (required); the answers go next to it, in RESULT.generations.jsonl. It "
            "replaces only an earlier result, unless --overwrite"
        }
    )
    prompts: Optional[str] = field(
        default=None,
        metadata={"help": "a jsonl of {prompt, kind (harmful|benign), category, source} (or give --suite)"},
    )
    suite: Optional[str] = choices(*SUITE_NAMES, default=None, help="a named prompt set (or give --prompts)")
    judge: str = choices(
        *JUDGE_NAMES, default=DEFAULT_JUDGE, help="the judge of harmful content and refusals (default: the audited one)"
    )
    judge_model: Optional[str] = field(
        default=None, metadata={"help": "model folder or hub name of a model judge (default: the judge's own)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an output file that bfpo evaluate did not write"})
    limit: Optional[int] = field(default=None, metadata={"help": "the first N prompts of each task (source)"})
    disc: Optional[List[str]] = field(
        default=None, metadata={"help": "also run the discriminative tasks: 'all', or the task names"}
    )
    alpaca_output_file: Optional[str] = field(
        default=None,
        metadata={
            "help": "write the benign answers in AlpacaEval's model_outputs format here (and run alpaca_eval if "
            "installed and configured)"
        },
    )

    def __post_init__(self):
        if (self.prompts is None) == (self.suite is None):
            raise ValueError("give exactly one of --prompts (a .jsonl file) or --suite (a prompt-set name)")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    from bfpo.args import parse

    g, a = parse(
        [GenerationArguments, EvaluateArguments],
        argv,
        prog="bfpo evaluate",
        description=__doc__.split("\n\n")[0],
        path_fields=("prompts",),
    )
    disc = None if a.disc is None else [t for t in a.disc if t != "all"]
    return evaluate_model(
        g.model_name_or_path,
        prompts=a.prompts,
        suite=a.suite,
        judge=a.judge,
        judge_model=a.judge_model,
        out=a.output_file,
        limit=a.limit,
        max_new_tokens=g.max_new_tokens,
        bf16=g.bf16,
        batch_size=g.batch_size,
        disc=disc,
        alpaca_out=a.alpaca_output_file,
        system_prompt=g.system_prompt,
        backend=g.backend,
        overwrite=a.overwrite,
        chat_template=g.chat_template,
    )
