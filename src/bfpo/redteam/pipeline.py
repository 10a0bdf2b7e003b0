"""Red-teaming data generation (section 4.3): harmful prompts -> sampled responses -> safety labels and a
helpfulness preference -> BFPO pairs.

The paper samples two responses per PKU-SafeRLHF prompt from Zephyr-7b-beta, labels each with the HarmBench
classifier, keeps the prompts where a response is harmful and ranks the pair with PairRM (9K prompts ->
1.5K pairs). ``run_redteam`` does the same with any model, :mod:`bfpo.eval.judges` judge and
:mod:`bfpo.redteam.rankers` ranker:

1. sample ``k`` responses per prompt (temperature sampling, seeded per chunk of prompts);
2. judge every response; responses the judge could not parse are set aside;
3. pick the pair among the distinct parsed responses: for k = 2 the two of them; for k > 2 every pair is
   ranked (round robin) and the response with the most wins is ``chosen``, the one with the fewest
   ``rejected`` (ties: earlier sample);
4. keep the prompt when at least one of ALL its parsed responses is harmful (``keep="harmful"``, the
   paper's rule) or always (``keep="all"``);
5. write a :class:`~bfpo.data.records.PairRecord` dict per kept prompt: chosen = the more helpful response
   (whatever its safety, as BFPO wants), ``safe_*`` = not harmful.

Each prompt's outcome is appended to ``OUT.progress.jsonl`` (flushed per prompt), so a re-run skips
prompts already done, kept or dropped; counts go to ``OUT.stats.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from bfpo.args import choices
from bfpo.data.adapters import looks_local
from bfpo.data.records import DataValidationError, PairRecord, validate_record
from bfpo.errors import OutputExistsError, UserInputError, UserPathNotFoundError
from bfpo.eval.judges import DEFAULT_JUDGE, JUDGE_NAMES
from bfpo.files import iter_jsonl, read_table, read_text_checked
from bfpo.models.generate import GenerationArguments
from bfpo.redteam.rankers import RANKERS

STAT_KEYS = ("prompts_seen", "kept", "dropped_all_safe", "dropped_identical_responses", "dropped_unparsed")


def load_prompts(source: str, split: str = "train", column: str = "prompt", limit: Optional[int] = None) -> List[str]:
    """Prompts from a local ``.jsonl`` (field ``column``), ``.csv`` (column ``column``), ``.txt`` (one per
    line), or a hub dataset name (e.g. ``PKU-Alignment/PKU-SafeRLHF``, ``walledai/AdvBench``; column
    ``column`` of ``split``). Empty prompts are skipped and duplicates removed, keeping the first.
    """
    path = Path(source)
    prompts: List[str] = []
    if path.suffix == ".jsonl":
        for n, row in iter_jsonl(source):
            if column not in row:
                raise DataValidationError(f"{source} line {n}: missing field '{column}'")
            prompts.append(str(row[column]))
    elif path.suffix == ".csv":
        table = read_table(path)
        if column not in table.column_names:
            raise DataValidationError(f"{source}: no column '{column}' (columns: {table.column_names})")
        prompts = [x or "" for x in table[column]]
    elif path.suffix == ".txt":
        prompts = read_text_checked(path).splitlines()
    elif path.exists():
        raise DataValidationError(f"{source}: unsupported prompt file type (use .jsonl, .csv or .txt)")
    elif looks_local(source):
        raise UserPathNotFoundError(f"prompt file {source} not found")
    else:
        from datasets import load_dataset

        try:
            ds = load_dataset(source, split=split)
        except (OSError, ConnectionError, ValueError) as e:  # DatasetNotFoundError, offline, bad split
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserInputError(
                f"prompts {source!r}: not a local file, and the hub dataset could not be loaded ({first})"
            ) from e
        if column not in ds.column_names:
            raise DataValidationError(f"{source} ({split}): no column '{column}' (columns: {ds.column_names})")
        prompts = [str(x) for x in ds[column]]
    seen, out = set(), []
    for p in prompts:
        p = p.strip()
        if p and p not in seen:
            seen.add(p)
            out.append(p)
    return out[:limit] if limit is not None else out


def _progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.jsonl")


def _stats_path(out: Path) -> Path:
    return out.with_name(out.name + ".stats.json")


def check_pairs_out(out: Path, overwrite: bool = False) -> None:
    """``out`` is new, empty, or the pairs file of an earlier ``bfpo redteam`` run (its progress log is next
    to it), which this run resumes; anything else is refused. ``overwrite`` starts afresh: the file, its
    progress log and its stats are removed."""
    progress = _progress_path(out)
    if out.is_dir():
        raise UserInputError(f"--output_file {out} is a folder; give a file name such as {out / 'pairs.jsonl'}")
    if overwrite:
        for path in (out, progress, _stats_path(out)):
            path.unlink(missing_ok=True)
        return
    if out.exists() and out.stat().st_size > 0 and not progress.exists():
        raise OutputExistsError(
            f"--output_file {out} holds data that no earlier 'bfpo redteam' run on this path "
            f"wrote (no {progress.name} next to it); choose another --output_file, or pass "
            "--overwrite "
            "to replace it"
        )


def _done(out: Path) -> Dict[str, str]:
    """prompt -> status for prompts processed by an earlier run (pairs file and progress log)."""
    done: Dict[str, str] = {}
    for path, key in ((out, None), (_progress_path(out), "status")):
        if not path.exists():
            continue
        # a line cut short by an interrupted run is skipped: that prompt is redone
        for _, row in iter_jsonl(path, skip_bad_lines=True):
            prompt = row.get("prompt")
            prompt = prompt if isinstance(prompt, str) else PairRecord.from_dict(row).prompt_text()
            done[prompt] = row.get(key, "kept") if key else "kept"
    return done


def select_pair(prompt: str, responses: Sequence[str], ranker) -> Tuple[int, int]:
    """Indices (chosen, rejected) among ``responses`` (at least two, distinct): the pair for k = 2; for
    k > 2 the most and the least winning response of a round robin of ranker comparisons."""
    k = len(responses)
    if k < 2:
        raise ValueError("select_pair needs at least two responses")
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    prefs = ranker.rank_pairs([prompt] * len(pairs), [responses[i] for i, _ in pairs], [responses[j] for _, j in pairs])
    wins = [0] * k
    for (i, j), p in zip(pairs, prefs):
        wins[i if p == 0 else j] += 1
    best = max(range(k), key=lambda i: (wins[i], -i))
    worst = min((i for i in range(k) if i != best), key=lambda i: (wins[i], i))
    return best, worst


def process_prompt(
    prompt: str,
    responses: Sequence[str],
    verdicts: Sequence,
    ranker,
    keep: str = "harmful",
    metadata: Optional[Dict[str, Any]] = None,
) -> Tuple[str, Optional[PairRecord]]:
    """Turn one prompt's sampled responses and verdicts into (status, record or None).

    status is "kept" or one of the ``dropped_*`` reasons of :data:`STAT_KEYS`.
    """
    distinct = {r.strip() for r in responses if r.strip()}
    if len(distinct) < 2:
        return "dropped_identical_responses", None
    parsed: Dict[str, Any] = {}
    for r, v in zip(responses, verdicts):
        if v.harmful is not None and r.strip() and r.strip() not in parsed:
            parsed[r.strip()] = (r, v)
    if len(parsed) < 2:
        return "dropped_unparsed", None
    if keep == "harmful" and not any(v.harmful for _, v in parsed.values()):
        return "dropped_all_safe", None
    cands = list(parsed.values())
    best, worst = select_pair(prompt, [r for r, _ in cands], ranker)
    (chosen, vc), (rejected, vr) = cands[best], cands[worst]
    meta = dict(metadata or {})
    meta.update(
        n_responses=len(responses),
        n_harmful=sum(bool(v.harmful) for _, v in cands),
        judge_raw_chosen=vc.raw,
        judge_raw_rejected=vr.raw,
        refusal_chosen=vc.refusal,
        refusal_rejected=vr.refusal,
    )
    rec = PairRecord(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        safe_chosen=float(not vc.harmful),
        safe_rejected=float(not vr.harmful),
        source="redteam",
        kind="safety",
        metadata=meta,
    )
    return "kept", validate_record(rec, where=f"redteam prompt {prompt[:60]!r}")


def _chunks(items: List[str], size: int) -> Iterable[Tuple[int, List[str]]]:
    for s in range(0, len(items), size):
        yield s, items[s : s + size]


def run_redteam(
    model: str,
    prompts: str,
    out: str,
    judge: str = "keyword",
    ranker: str = "rule",
    judge_model: Optional[str] = None,
    ranker_model: Optional[str] = None,
    k: int = 2,
    keep: str = "harmful",
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    bf16: bool = False,
    limit: Optional[int] = None,
    batch_size: int = 8,
    split: str = "train",
    column: str = "prompt",
    system_prompt: Optional[str] = None,
    backend: str = "hf",
    judge_obj=None,
    ranker_obj=None,
    progress: bool = True,
    overwrite: bool = False,
    chat_template: Optional[str] = None,
) -> Dict[str, int]:
    """Run the section 4.3 pipeline and return the counts (also written to ``OUT.stats.json``).

    ``out`` must be new, empty or this pipeline's own earlier output (resumed); ``overwrite`` replaces it.

    ``judge_obj``/``ranker_obj`` may be given instead of names (a judge/ranker already built); the
    counts in the returned dict cover this run and earlier runs on the same ``out`` together.
    """
    from tqdm.auto import tqdm

    from bfpo.eval.judges import get_judge
    from bfpo.models.generate import generate, load_for_generation
    from bfpo.redteam.rankers import get_ranker

    if k < 2:
        raise UserInputError(f"k must be at least 2 (responses per prompt), got {k}")
    if keep not in ("harmful", "all"):
        raise UserInputError(f"keep must be 'harmful' or 'all', got {keep!r}")
    out_path = Path(out)
    all_prompts = load_prompts(prompts, split=split, column=column, limit=limit)
    check_pairs_out(out_path, overwrite)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out_path)
    todo = [p for p in all_prompts if p not in done]
    stats = {key: 0 for key in STAT_KEYS}
    for status in done.values():
        stats["prompts_seen"] += 1
        stats[status if status in stats else "kept"] += 1
    print(f"redteam: {len(all_prompts)} prompts, {len(all_prompts) - len(todo)} already done, {len(todo)} to go")

    if todo:
        from bfpo.eval.evaluate import check_judge
        from bfpo.train.model_io import check_model_source

        if judge_obj is None:
            check_judge(judge, judge_model)
        check_model_source(model, "--model_name_or_path")
        lm, tok = load_for_generation(model, backend=backend, chat_template=chat_template, require_chat_template=True)
        judge_obj = judge_obj or get_judge(judge, judge_model)
        ranker_obj = ranker_obj or get_ranker(ranker, ranker_model)
        provenance = {
            "model": model,
            "judge": getattr(judge_obj, "name", judge),
            "judge_model": judge_model,
            "ranker": getattr(ranker_obj, "name", ranker),
            "ranker_model": ranker_model,
            "prompts": prompts,
            "sampling": {
                "k": k,
                "temperature": temperature,
                "top_p": top_p,
                "max_new_tokens": max_new_tokens,
                "do_sample": True,
            },
            "seed": seed,
        }
        index = {p: i for i, p in enumerate(all_prompts)}
        bar = tqdm(total=len(todo), desc="red teaming", disable=not progress)
        with (
            open(out_path, "a", encoding="utf-8") as fout,
            open(_progress_path(out_path), "a", encoding="utf-8") as flog,
        ):
            for _, chunk in _chunks(todo, batch_size):
                responses = generate(
                    lm,
                    tok,
                    chunk,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=k,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    batch_size=batch_size,
                    seed=seed + index[chunk[0]],
                    bf16=bf16,
                    system_prompt=system_prompt,
                    progress=False,
                )
                verdicts = judge_obj.judge_groups(chunk, responses, "harmful")
                for p, rs, vs in zip(chunk, responses, verdicts):
                    status, rec = process_prompt(
                        p, rs, vs, ranker_obj, keep=keep, metadata={**provenance, "prompt_index": index[p]}
                    )
                    if rec is not None:
                        fout.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")
                        fout.flush()
                    flog.write(
                        json.dumps(
                            {"prompt": p, "status": status, "harmful": [v.harmful for v in vs]}, ensure_ascii=False
                        )
                        + "\n"
                    )
                    flog.flush()
                    stats["prompts_seen"] += 1
                    stats[status] += 1
                    bar.update(1)
        bar.close()
    tmp = _stats_path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp, _stats_path(out_path))
    print("redteam: " + ", ".join(f"{key}={stats[key]}" for key in STAT_KEYS) + f" -> {out_path}")
    return stats


@dataclass
class RedteamArguments:
    """Settings of ``bfpo redteam`` (with :class:`~bfpo.models.generate.GenerationArguments`)."""

    prompts: str = field(
        metadata={
            "help": "prompts (required): .jsonl (field --column), .csv (column --column), .txt (one per line) or a hub "
            "dataset (PKU-Alignment/PKU-SafeRLHF, walledai/AdvBench)"
        }
    )
    output_file: str = field(
        metadata={
            "help": "PAIRS.jsonl to write (required): new, or the output of an earlier run, which is resumed; "
            "PAIRS.jsonl.progress.jsonl and PAIRS.stats.json go next to it"
        }
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "replace an existing output file (and its progress log) instead of refusing or resuming"},
    )
    judge: str = choices(*JUDGE_NAMES, default=DEFAULT_JUDGE, help="the judge that labels each response harmful or not")
    judge_model: Optional[str] = field(
        default=None, metadata={"help": "model folder or hub name of a model judge (default: the judge's own)"}
    )
    ranker: str = choices(*RANKERS, default="rule", help="how the more helpful response of a pair is chosen")
    ranker_model: Optional[str] = field(default=None, metadata={"help": "model folder or hub name of the ranker"})
    k: int = field(default=2, metadata={"help": "responses sampled per prompt (at least 2)"})
    keep: str = choices(
        "harmful",
        "all",
        default="harmful",
        help="keep prompts with at least one harmful response (as the paper), or all",
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling (prompt i uses seed + its index)"})
    limit: Optional[int] = field(default=None, metadata={"help": "use only the first N prompts"})
    split: str = field(default="train", metadata={"help": "split of a hub dataset"})
    column: str = field(default="prompt", metadata={"help": "the prompt field (jsonl) or column (csv, hub)"})


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    from bfpo.args import parse

    g, a = parse(
        [GenerationArguments, RedteamArguments],
        argv,
        prog="bfpo redteam",
        description=__doc__.split("\n\n")[0],
        path_fields=("prompts",),
    )
    return run_redteam(
        model=g.model_name_or_path,
        prompts=a.prompts,
        out=a.output_file,
        judge=a.judge,
        ranker=a.ranker,
        judge_model=a.judge_model,
        ranker_model=a.ranker_model,
        k=a.k,
        keep=a.keep,
        max_new_tokens=g.max_new_tokens,
        temperature=a.temperature,
        top_p=a.top_p,
        seed=a.seed,
        bf16=g.bf16,
        limit=a.limit,
        batch_size=g.batch_size,
        split=a.split,
        column=a.column,
        system_prompt=g.system_prompt,
        backend=g.backend,
        overwrite=a.overwrite,
        chat_template=g.chat_template,
    )
