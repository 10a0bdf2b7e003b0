"""Adapters from real preference-dataset schemas to :class:`~bfpo.data.records.PairRecord`.

BFPO (section 4.2) trains on two datasets: a *safety* set with helpfulness rankings plus binary safety
labels (PKU-SafeRLHF) and a *helpfulness* set whose responses are all treated as safe (UltraFeedback).
Each adapter maps one row of one schema to a record whose ``chosen`` is the MORE HELPFUL response y_hw
(Eq. 14 needs I_safe(y_hw) and I_safe(y_hl)); :func:`load_pairs` reads a local file or a hub dataset,
detects the schema, validates every row and either raises on the first bad row or drops bad rows and
reports counts per reason.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from bfpo.data.records import DataValidationError, PairRecord, _label, validate_record
from bfpo.errors import BfpoUserError, UserInputError, UserPathNotFoundError
from bfpo.files import TABLE_SUFFIXES, read_table

logger = logging.getLogger(__name__)

SCHEMAS = ("auto", "pku_saferlhf", "ultrafeedback", "pairs", "generic")
ON_ERROR = ("raise", "drop")
LOCAL_SUFFIXES = tuple(TABLE_SUFFIXES)
CANONICAL_FIELDS = ("prompt", "chosen", "rejected", "safe_chosen", "safe_rejected", "source", "kind")
LABEL_FIELDS = ("safe_chosen", "safe_rejected")

#: Columns both PKU-SafeRLHF releases share (the 2023 release has exactly these).
PKU_COLUMNS = (
    "prompt",
    "response_0",
    "response_1",
    "is_response_0_safe",
    "is_response_1_safe",
    "better_response_id",
    "safer_response_id",
)
#: Per-response columns of the v1.0 (2024) release, mapped to chosen/rejected in the metadata.
PKU_V1_RESPONSE_COLUMNS = ("source", "harm_category", "severity_level")
ULTRAFEEDBACK_COLUMNS = ("chosen", "rejected")

_TRUE = {"true", "t"}
_FALSE = {"false", "f"}


# ----------------------------------------------------------------------------------------- helpers
def _require(row: Mapping[str, Any], column: str, where: str) -> Any:
    """``row[column]``; a column that is absent or null (a table gives every row every column, null where a
    row had none) is an error naming it and the fields the row has."""
    if row.get(column) is None:
        present = [str(k) for k, v in row.items() if v is not None]
        null = " (null)" if column in row else ""
        raise DataValidationError(f"{where}: missing field '{column}'{null} (row has: {', '.join(present)})")
    return row[column]


def _maybe_json(value: Any) -> Any:
    """Decode a JSON list/dict that a CSV file stored as text; anything else is returned unchanged."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_label(value: Any, where: str, name: str) -> float:
    """A safety label as float in [0, 1]; accepts bools, numbers and CSV's 'True'/'False' text."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return 1.0
        if low in _FALSE:
            return 0.0
    return _label(value, where, name)


def _as_response_id(value: Any, where: str, name: str) -> int:
    try:
        idx = int(str(value).strip()) if not isinstance(value, bool) else -1
    except (TypeError, ValueError):
        idx = -1
    if idx not in (0, 1):
        raise DataValidationError(f"{where}: field '{name}' must be 0 or 1, got {value!r}")
    return idx


def _as_prompt(value: Any) -> Any:
    """Text prompts stay text; a JSON-encoded message list (CSV) becomes a list."""
    decoded = _maybe_json(value)
    return decoded if isinstance(decoded, list) else value


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


# ----------------------------------------------------------------------------------------- adapters
def from_pku_saferlhf(row: Mapping[str, Any], where: str) -> PairRecord:
    """One PKU-SafeRLHF row (2023 release or the v1.0 release of 2024) as a safety pair.

    ``chosen`` is ``response_{better_response_id}`` (the more helpful one, y_hw), the labels come from
    ``is_response_{i}_safe``. ``metadata['safer']`` says which of chosen/rejected is the safer response
    (used by the DPO-S and mix baselines); v1.0's prompt/response sources, harm categories and severity
    levels are kept under ``chosen_*`` / ``rejected_*`` keys.
    """
    for column in PKU_COLUMNS:
        _require(row, column, where)
    better = _as_response_id(row["better_response_id"], where, "better_response_id")
    safer = _as_response_id(row["safer_response_id"], where, "safer_response_id")
    worse = 1 - better
    labels = [_as_label(row[f"is_response_{i}_safe"], where, f"is_response_{i}_safe") for i in (0, 1)]
    metadata: Dict[str, Any] = {"safer": "chosen" if safer == better else "rejected"}
    v1_columns = [f"response_{i}_{name}" for name in PKU_V1_RESPONSE_COLUMNS for i in (0, 1)]
    if "prompt_source" in row or any(c in row for c in v1_columns):
        metadata["release"] = "v1.0"
        if "prompt_source" in row:
            metadata["prompt_source"] = row["prompt_source"]
        for name in PKU_V1_RESPONSE_COLUMNS:
            for role, idx in (("chosen", better), ("rejected", worse)):
                column = f"response_{idx}_{name}"
                if column in row:
                    metadata[f"{role}_{name}"] = _maybe_json(row[column])
    else:
        metadata["release"] = "v0"
    return PairRecord(
        prompt=_as_prompt(row["prompt"]),
        chosen=row[f"response_{better}"],
        rejected=row[f"response_{worse}"],
        safe_chosen=labels[better],
        safe_rejected=labels[worse],
        source="pku_saferlhf",
        kind="safety",
        metadata=metadata,
    )


def _split_conversation(value: Any, where: str, name: str) -> Tuple[list, str]:
    """(turns before the final assistant turn, final assistant content) of an UltraFeedback column."""
    msgs = _maybe_json(value)
    if isinstance(msgs, str):
        return [], msgs
    if not _is_messages(msgs) or not msgs:
        raise DataValidationError(
            f"{where}: field '{name}' must be text or a list of {{role, content}} messages, got {type(msgs).__name__}"
        )
    if msgs[-1]["role"] != "assistant":
        raise DataValidationError(
            f"{where}: field '{name}' must end with an assistant turn, got role {msgs[-1]['role']!r}"
        )
    return [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]], msgs[-1]["content"]


def _split_pair(row: Mapping[str, Any], where: str) -> Tuple[list, str, str]:
    """(shared conversation before the final turn, chosen text, rejected text) of a row whose ``chosen`` and
    ``rejected`` are text or message lists ending with the assistant turn."""
    context_c, chosen = _split_conversation(row["chosen"], where, "chosen")
    context_r, rejected = _split_conversation(row["rejected"], where, "rejected")
    if context_c and context_r and context_c != context_r:
        raise DataValidationError(f"{where}: fields 'chosen' and 'rejected' continue different conversations")
    return context_c or context_r, chosen, rejected


def from_ultrafeedback(row: Mapping[str, Any], where: str) -> PairRecord:
    """One HuggingFaceH4/ultrafeedback_binarized row as a helpfulness pair, both responses safe.

    Section 4.2: "we treat all responses as safe since they undergo human filtering", so both labels are
    1.0. The prompt is the conversation before the final assistant turn of ``chosen`` (falling back to
    the ``prompt`` text when the columns hold plain text).
    """
    for column in ULTRAFEEDBACK_COLUMNS:
        _require(row, column, where)
    context, chosen, rejected = _split_pair(row, where)
    prompt: Any = context or _as_prompt(_require(row, "prompt", where))
    metadata = {k: row[k] for k in ("prompt_id", "score_chosen", "score_rejected") if k in row}
    return PairRecord(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        safe_chosen=1.0,
        safe_rejected=1.0,
        source="ultrafeedback",
        kind="helpful",
        metadata=metadata,
    )


def from_pairs(row: Mapping[str, Any], where: str) -> PairRecord:
    """A row already in the canonical PairRecord fields (what ``bfpo redteam`` writes as jsonl).

    Unknown columns go to ``metadata``; CSV text ('True', JSON message lists, JSON metadata) is decoded.
    """
    d = dict(row)
    if "prompt" in d:
        d["prompt"] = _as_prompt(d["prompt"])
    for name in ("safe_chosen", "safe_rejected"):
        if name in d:
            d[name] = _as_label(d[name], where, name)
    if "metadata" in d:
        meta = _maybe_json(d["metadata"])
        if meta is None or meta == "":
            meta = {}
        if not isinstance(meta, dict):
            raise DataValidationError(f"{where}: field 'metadata' must be a mapping, got {type(meta).__name__}")
        d["metadata"] = dict(meta)
    for name in ("source", "kind"):
        if name in d and d[name] is None:
            del d[name]
    return PairRecord.from_dict(d, where)


#: the two columns a TRL preference dataset needs on top of prompt/chosen/rejected (and the optional third)
TRL_LABEL_COLUMNS = ("safe_chosen", "safe_rejected")


def from_trl(row: Mapping[str, Any], where: str) -> PairRecord:
    """One row of TRL's standard preference format plus BFPO's two safety-label columns.

    ``prompt``/``chosen``/``rejected`` are text, or conversational message lists (explicit prompt: ``chosen``
    and ``rejected`` hold the assistant turn; implicit prompt: no ``prompt`` column, and both hold the whole
    conversation, as in UltraFeedback). ``chosen`` is the MORE HELPFUL response y_hw, whatever its safety.
    ``safe_chosen`` and ``safe_rejected`` (bool or a probability in [0, 1]) are required: a missing label is
    an error, never "safe". The optional ``is_safety`` column says which dataset a row comes from (the
    buffered sampler balances the two); without it a row with an unsafe response is a safety pair and a
    row of two safe responses a helpfulness pair (section 4.2: helpfulness data is all safe).
    """
    for column in ("chosen", "rejected") + TRL_LABEL_COLUMNS:
        _require(row, column, where)
    context, chosen, rejected = _split_pair(row, where)
    prompt: Any = _as_prompt(row["prompt"]) if row.get("prompt") not in (None, "") else context
    if not prompt:
        raise DataValidationError(f"{where}: no prompt: give a 'prompt' column or conversations in 'chosen'")
    safe_c = _as_label(row["safe_chosen"], where, "safe_chosen")
    safe_r = _as_label(row["safe_rejected"], where, "safe_rejected")
    if row.get("is_safety") is not None:
        kind = "safety" if _as_label(row["is_safety"], where, "is_safety") >= 0.5 else "helpful"
    else:
        kind = "safety" if min(safe_c, safe_r) < 1.0 else "helpful"
    metadata = {
        k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected", "is_safety") + TRL_LABEL_COLUMNS
    }
    return PairRecord(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        safe_chosen=safe_c,
        safe_rejected=safe_r,
        source="trl",
        kind=kind,
        metadata=metadata,
    )


def records_from_trl_dataset(rows: Iterable[Mapping[str, Any]], name: str = "train_dataset") -> List[PairRecord]:
    """Every row of a TRL-format preference dataset (a ``datasets.Dataset`` or a list of dicts) as a
    validated :class:`PairRecord`; errors name ``"<name> row <i>"`` and the field."""
    out = []
    for i, row in enumerate(rows):
        where = f"{name} row {i}"
        if not isinstance(row, Mapping):
            raise DataValidationError(f"{where}: row must be an object, got {type(row).__name__}")
        out.append(validate_record(from_trl(row, where), where))
    return out


def from_generic(row: Mapping[str, Any], where: str, column_map: Mapping[str, str]) -> PairRecord:
    """A row of any schema, through ``column_map`` (canonical field -> column name).

    Fields the map does not name are read from the column of the same name when present. Safety labels
    default to 1.0 only when the map does not name them (a named but missing column is an error). The
    kind is the mapped ``kind`` column, else 'safety' when a safety label column is named, else 'helpful'.
    Unmapped columns are kept in ``metadata``.
    """
    bad = sorted(set(column_map) - set(CANONICAL_FIELDS))
    if bad:
        raise UserInputError(f"column_map names unknown field(s) {bad}; valid fields: {', '.join(CANONICAL_FIELDS)}")
    values: Dict[str, Any] = {}
    for name in ("prompt", "chosen", "rejected"):
        values[name] = _require(row, column_map.get(name, name), where)
    values["prompt"] = _as_prompt(values["prompt"])
    for name in ("safe_chosen", "safe_rejected"):
        if name in column_map:
            values[name] = _as_label(_require(row, column_map[name], where), where, name)
        elif name in row and row[name] is not None:
            values[name] = _as_label(row[name], where, name)
        else:
            values[name] = 1.0
    if "kind" in column_map:
        values["kind"] = _require(row, column_map["kind"], where)
    else:
        values["kind"] = "safety" if ("safe_chosen" in column_map or "safe_rejected" in column_map) else "helpful"
    values["source"] = str(row.get(column_map["source"], "")) if "source" in column_map else "generic"
    used = {column_map.get(n, n) for n in CANONICAL_FIELDS}
    metadata = {k: v for k, v in row.items() if k not in used}
    return PairRecord(metadata=metadata, **values)


# ----------------------------------------------------------------------------------------- reading
def _read_hub(source: str, split: Optional[str], revision: Optional[str] = None) -> Iterable[Dict[str, Any]]:
    """Rows of a hub dataset (``datasets.load_dataset`` at ``revision``, a commit hash or tag, when given);
    ``split`` is required when there are several."""
    import datasets

    ds = datasets.load_dataset(source, split=split, revision=revision)
    if isinstance(ds, datasets.DatasetDict):
        raise UserInputError(f"{source}: dataset has splits {', '.join(ds)}; pass split=")
    return ds


def looks_local(source: str) -> bool:
    """A file name (known suffix) or a path (starts with ``.``, ``/``, ``~``, or has more ``/`` than a hub
    id ``owner/name``): never looked up on the hub."""
    return (
        Path(source).suffix.lower() in LOCAL_SUFFIXES
        or source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or "\\" in source
    )


def _load_hub_rows(source: str, split: Optional[str], revision: Optional[str]) -> Iterable[Dict[str, Any]]:
    """:func:`_read_hub`, with "not here and not on the hub" reported as a user error naming the source."""
    try:
        return _read_hub(source, split, revision)
    except BfpoUserError:
        raise
    except (OSError, ConnectionError, ValueError) as e:  # DatasetNotFoundError, offline, bad split
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"data source {source!r}: not a local file or folder, and the hub dataset could not be loaded ({first})"
        ) from e


def detect_schema(columns: Sequence[str], first_row: Optional[Mapping[str, Any]] = None, where: str = "data") -> str:
    """The schema name of a set of columns; :class:`DataValidationError` listing them when unknown."""
    cols = set(columns)
    if set(PKU_COLUMNS) <= cols:
        return "pku_saferlhf"
    if {"chosen", "rejected"} <= cols:
        chosen = _maybe_json(first_row.get("chosen")) if first_row else None
        if {"score_chosen", "score_rejected"} & cols or "prompt_id" in cols or _is_messages(chosen):
            return "ultrafeedback"
        if "prompt" in cols:
            return "pairs"
    raise DataValidationError(
        f"{where}: cannot detect the schema from columns [{', '.join(sorted(map(str, cols)))}]; expected "
        f"PKU-SafeRLHF ({', '.join(PKU_COLUMNS)}), UltraFeedback (prompt, chosen/rejected message lists, "
        "score_chosen, score_rejected) or canonical pairs (prompt, chosen, rejected); pass schema= or "
        "schema='generic' with column_map="
    )


@dataclass
class LoadReport:
    """What :func:`load_pairs_with_report` read: rows seen, records kept, drops per reason."""

    source: str
    schema: str
    n_rows: int = 0
    n_loaded: int = 0
    dropped: Dict[str, int] = field(default_factory=dict)
    examples: List[str] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        reasons = "; ".join(f"{n} x {r}" for r, n in sorted(self.dropped.items(), key=lambda kv: -kv[1]))
        return f"{self.source} ({self.schema}): {self.n_loaded} records from {self.n_rows} rows" + (
            f", dropped {self.n_dropped}: {reasons}" if self.dropped else ""
        )


_GOT = re.compile(r",? got .*$", re.S)


def _reason(message: str, where: str) -> str:
    """A drop reason without the row location and the offending value, so that rows group by cause."""
    text = message[len(where) + 2 :] if message.startswith(where + ": ") else message
    text = re.sub(r" \(row has: .*\)$", "", text, flags=re.S)
    return _GOT.sub("", text).strip()


def _adapter(schema: str, column_map: Optional[Mapping[str, str]]) -> Callable[[Mapping[str, Any], str], PairRecord]:
    if schema == "pku_saferlhf":
        return from_pku_saferlhf
    if schema == "ultrafeedback":
        return from_ultrafeedback
    if schema == "pairs":
        return from_pairs
    if column_map is None:
        raise UserInputError("schema='generic' needs column_map (canonical field -> column name)")
    return lambda row, where: from_generic(row, where, column_map)


def _iter_rows(source: str, split: Optional[str], revision: Optional[str] = None) -> Tuple[str, Iterable[Any]]:
    """(name used in error messages, rows): a local file, else ``datasets.load_dataset`` (a hub name or
    a local folder of data files)."""
    if looks_local(source) and not Path(source).expanduser().is_dir():
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserPathNotFoundError(f"data file not found: {path}")
        return path.name, read_table(path)
    name = f"{source}@{revision[:12]}" if revision else source
    return (f"{name}[{split}]" if split else name), _load_hub_rows(source, split, revision)


def load_pairs_with_report(
    source: str,
    schema: str = "auto",
    split: Optional[str] = None,
    column_map: Optional[Mapping[str, str]] = None,
    kind: Optional[str] = None,
    limit: Optional[int] = None,
    on_error: str = "raise",
    seed: int = 0,
    shuffle: bool = False,
    revision: Optional[str] = None,
) -> Tuple[List[PairRecord], LoadReport]:
    """:func:`load_pairs` plus a :class:`LoadReport` with the number of rows dropped per reason."""
    if schema not in SCHEMAS:
        raise UserInputError(f"unknown schema {schema!r}; valid schemas: {', '.join(SCHEMAS)}")
    if on_error not in ON_ERROR:
        raise UserInputError(f"unknown on_error {on_error!r}; valid values: {', '.join(ON_ERROR)}")
    if kind is not None and kind not in ("safety", "helpful"):
        raise UserInputError(f"kind must be 'safety' or 'helpful', got {kind!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise UserInputError(f"limit must be an integer >= 0, got {limit!r}")
    name, rows = _iter_rows(source, split, revision)
    order: Optional[List[int]] = None
    if shuffle:
        order = list(range(len(rows)))  # type: ignore[arg-type]
        random.Random(seed).shuffle(order)
    if schema == "auto":
        if column_map is not None:
            schema = "generic"
        else:
            first = _first_row(rows)
            schema = detect_schema(list(first) if first else [], first, where=name)
    adapt = _adapter(schema, column_map)
    if schema == "generic" and kind == "safety" and not set(LABEL_FIELDS) & set(column_map or {}):
        first = _first_row(rows) or {}
        if any(first.get(n) is None for n in LABEL_FIELDS):
            raise UserInputError(
                f"{name}: column_map names no safety label columns ({', '.join(LABEL_FIELDS)}) "
                "for a safety set, so every response would count as safe; map the label "
                "columns, or use the file as the helpful set (whose responses count as safe)"
            )
    report = LoadReport(source=str(source), schema=schema)
    records: List[PairRecord] = []
    reasons: Counter = Counter()
    for i, row in _indexed(rows, order):
        if limit is not None and len(records) >= limit:
            break
        report.n_rows += 1
        where = f"{name} row {i}"
        try:
            if not isinstance(row, Mapping):
                raise DataValidationError(f"{where}: row must be an object, got {type(row).__name__}")
            rec = adapt(row, where)
            if kind is not None:
                rec.kind = kind
            _require_labels(row, schema, column_map, rec.kind, where)
            rec.metadata.setdefault("origin", where)
            records.append(validate_record(rec, where))
        except DataValidationError as e:
            if on_error == "raise":
                raise
            reasons[_reason(str(e), where)] += 1
            if len(report.examples) < 5:
                report.examples.append(str(e))
    report.n_loaded = len(records)
    report.dropped = dict(reasons)
    _warn_if_all_safe(records, name)
    if reasons:
        logger.warning(
            "dropped %d invalid row(s) of %s: %s",
            report.n_dropped,
            source,
            "; ".join(f"{n} x {r}" for r, n in reasons.most_common()),
        )
    return records, report


def _require_labels(
    row: Mapping[str, Any], schema: str, column_map: Optional[Mapping[str, str]], kind: str, where: str
) -> None:
    """A safety pair must carry both safety labels: in the ``pairs`` and ``generic`` schemas a missing
    label would otherwise default to safe and train a harmful response as safe."""
    if kind != "safety" or schema not in ("pairs", "generic"):
        return
    mapped = column_map or {}
    missing = [n for n in LABEL_FIELDS if n not in mapped and row.get(n) is None]
    if missing:
        raise DataValidationError(
            f"{where}: safety pair without field(s) {', '.join(missing)}; a missing label "
            "would count the response as safe (give the label, or use the file as the "
            "helpful set)"
        )


def _warn_if_all_safe(records: Sequence[PairRecord], name: str) -> None:
    """Warn when every safety pair has two safe responses: BFPO then learns nothing about safety."""
    safety = [r for r in records if r.kind == "safety"]
    if safety and all(r.safe_chosen >= 0.5 and r.safe_rejected >= 0.5 for r in safety):
        logger.warning(
            "%s: all %d safety pairs label both responses safe, so they teach no safety preference; "
            "check the label columns",
            name,
            len(safety),
        )


def _first_row(rows: Iterable[Any]) -> Optional[Mapping[str, Any]]:
    if hasattr(rows, "column_names"):  # a datasets.Dataset: columns without materialising a row
        return {c: None for c in rows.column_names} if len(rows) == 0 else rows[0]  # type: ignore[attr-defined]
    for row in rows:
        return row if isinstance(row, Mapping) else None
    return None


def _indexed(rows: Iterable[Any], order: Optional[Iterable[int]]) -> Iterator[Tuple[int, Any]]:
    if order is None:
        yield from enumerate(rows)
    else:
        for i in order:
            yield i, rows[i]  # type: ignore[index]


def load_pairs(
    source: str,
    schema: str = "auto",
    split: Optional[str] = None,
    column_map: Optional[Mapping[str, str]] = None,
    kind: Optional[str] = None,
    limit: Optional[int] = None,
    on_error: str = "raise",
    seed: int = 0,
    shuffle: bool = False,
    revision: Optional[str] = None,
) -> List[PairRecord]:
    """Load validated preference pairs from a local file or a hub dataset.

    Args:
        source: a local ``.json``/``.jsonl``/``.csv``/``.parquet`` file, or a hub dataset name read with
            ``datasets.load_dataset(source, split=split)``.
        schema: one of ``auto``, ``pku_saferlhf``, ``ultrafeedback``, ``pairs``, ``generic``; ``auto``
            detects it from the columns (``generic`` when ``column_map`` is given).
        split: the hub split (e.g. ``train_prefs`` for UltraFeedback); ignored for local files.
        column_map: canonical field -> column name, for ``generic``.
        kind: override the records' kind ('safety' or 'helpful').
        limit: keep the first ``limit`` valid rows (of the shuffled order when ``shuffle``).
        on_error: ``raise`` the first :class:`DataValidationError`, or ``drop`` bad rows (a warning logs
            the counts per reason; :func:`load_pairs_with_report` returns them).
        seed: seed of the row shuffle.
        shuffle: shuffle the rows (deterministically, by ``seed``) before ``limit`` is applied.
        revision: the hub dataset's revision (commit hash, branch or tag); pin it for reproducible runs
            (the paper's PKU-SafeRLHF is revision ``ff7ba91063016c78a225b0f74e1c0860bb18230f``).

    Every record is checked with :func:`validate_record` and named ``"<file> row <i>"`` in errors and in
    ``metadata['origin']``.
    """
    return load_pairs_with_report(
        source,
        schema=schema,
        split=split,
        column_map=column_map,
        kind=kind,
        limit=limit,
        on_error=on_error,
        seed=seed,
        shuffle=shuffle,
        revision=revision,
    )[0]
