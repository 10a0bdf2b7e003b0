"""Configuration: ``BFPOConfig`` (TrainingArguments + the BFPO knobs) and YAML recipes.

A recipe is a YAML file with three sections, in the spirit of torchtune's configs::

    model:  {name_or_path, dtype, trust_remote_code, attn_implementation, revision, gguf_file, lora,
             tokenizer, chat_template (a built-in name such as ``zephyr``, or a Jinja string)}
    data:   {mode, safety: {source, schema, split, limit, column_map, revision, shuffle}, helpful: {...},
             max_length, max_prompt_length, on_error}
    train:  any field of BFPOConfig (TrainingArguments fields + loss, tau, alpha, trainable, ...)
    sft:    (for ``bfpo sft``) any field of trl.SFTConfig

Overrides on the command line use dotted keys: ``train.tau=0.1 data.safety.limit=100``.
"""

from __future__ import annotations

import copy
import enum
import math
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from transformers import TrainingArguments

from bfpo.errors import UserInputError, UserPathNotFoundError
from bfpo.objective import LOSSES, alpha_constants, case_label_values, check_label_rules

SECTIONS = {"model", "data", "train", "sft"}
#: recipe keys outside the stage dataclass, with the help that ``bfpo train --help`` prints
MODEL_KEYS = {
    "name_or_path": "hub name or local model folder (required)",
    "dtype": "float32 (default), bfloat16, float16 or auto",
    "trust_remote_code": "run the model repository's own code (off unless you read it)",
    "attn_implementation": "eager, sdpa, flash_attention_2, ...",
    "revision": "the hub model's commit, branch or tag",
    "gguf_file": "load this .gguf file from the folder",
    "lora": "LoRA settings {r, lora_alpha, target_modules, ...}; the reference is the base with adapters off",
    "tokenizer": "a different tokenizer folder or hub name",
    "chat_template": "built-in template name (zephyr, chatml) or a Jinja string; required when the tokenizer "
                     "has none",
}
DATA_KEYS = {
    "mode": "bfpo (buffered), bfpo_no_buffer, dpo_h, dpo_s, mix (Table 1 / Table 4)",
    "safety": "the safety pairs: a source mapping (keys below)",
    "helpful": "the helpfulness pairs: a source mapping (keys below)",
    "max_length": "tokens of prompt + response (copied to train.max_length)",
    "max_prompt_length": "tokens of prompt, cut from the left",
    "on_error": "raise (default) or drop invalid rows (counted)",
    "seed": "seed of subsets (limit) and of the mix's shuffle",
}
SOURCE_KEYS = {
    "source": "hub dataset name or a local .jsonl/.json/.csv/.parquet file (required)",
    "schema": "auto, pku_saferlhf, ultrafeedback, pairs or generic",
    "split": "hub split, e.g. train or train_prefs",
    "limit": "keep this many rows: a seeded random subset (data.seed) unless shuffle: false",
    "column_map": "generic schema: canonical field -> column name",
    "revision": "the hub dataset's commit, branch or tag (pin it to reproduce a run)",
    "shuffle": "shuffle before limit (default: true when limit is set)",
}


def recipe_help(stage: str, config_cls: type) -> str:
    """Every recipe key, generated from the key tables above and ``config_cls``'s dataclass fields (their
    type, default and help), for the ``--help`` of ``bfpo train`` / ``bfpo sft``."""
    def block(title: str, keys: Dict[str, str]) -> List[str]:
        return [title] + [f"  {k:<26} {v}" for k, v in keys.items()]

    lines = block("model.* keys:", MODEL_KEYS) + block("data.* keys:", DATA_KEYS)
    lines += block("data.safety.* / data.helpful.* keys:", SOURCE_KEYS)
    lines.append(f"{stage}.* keys (every {config_cls.__name__} field):")
    for f in sorted(fields(config_cls), key=lambda f: f.name):
        if not f.init or f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        text = " ".join(str(f.metadata.get("help", "")).split())
        kind = getattr(f.type, "__name__", str(f.type)).replace("typing.", "")
        lines.append(f"  {f.name:<26} {kind} = {default!r}" + (f": {text}" if text else ""))
    return "\n".join(lines)


class RecipeError(UserInputError):
    """A recipe that cannot run; the message names the file and the key (a ``ValueError``)."""


@dataclass
class BFPOConfig(TrainingArguments):
    """``transformers.TrainingArguments`` plus the BFPO objective and trainer settings.

    The names follow TRL's ``DPOConfig`` where they mean the same thing (``max_length``,
    ``max_prompt_length``, ``precompute_ref_log_probs``); ``tau`` is the paper's KL coefficient
    (TRL's ``beta``).
    """

    loss: str = field(default="bfpo", metadata={"help": "bfpo (Eq. 15), dpo (Eq. 4), ipo or safedpo (Kim et al.)"})
    tau: float = field(default=0.01, metadata={"help": "KL penalty tau (section 4.2 uses 0.01)"})
    alpha: Optional[float] = field(default=0.5, metadata={
        "help": "label shift of Eq. 14 (0 < alpha < 1 keeps Figure 3's signs; 0.5 gives +1/+0.5/-0.5/-1, the "
                "official recipe); None -> use label_b1..b3"})
    label_b1: float = 3.0
    label_b2: float = -1.0
    label_b3: float = 0.5
    safedpo_delta: float = field(default=0.0, metadata={
        "help": "loss safedpo only: SafeDPO's safety margin Delta (Kim et al., Eq. 12); >= 0"})
    enforce_label_signs: bool = field(default=True, metadata={
        "help": "refuse labels that break section 3.1's sign rule (cases 1-2 > 0, cases 3-4 < 0); false only "
                "warns, for ablations such as Table 4's alpha = 0"})
    trainable: Optional[List[str]] = field(
        default=None, metadata={"help": "regexes of trainable parameter names (paper: ['down_proj']); None=all"})
    buffered: bool = field(default=True, metadata={"help": "equal safety/helpful pairs in every batch (Alg. 1)"})
    precompute_ref_log_probs: bool = True
    ref_cache_dir: Optional[str] = None
    max_length: int = 1024
    max_prompt_length: Optional[int] = 512
    logps_chunk_size: int = 1024
    pad_to_multiple_of: Optional[int] = None
    padding_free: bool = field(default=False, metadata={
        "help": "pack chosen+rejected sequences into one row without padding (position_ids restart per sequence)"})
    fp32_trainable_params: bool = field(default=True, metadata={
        "help": "with bf16/fp16 autocast and a half-precision model, keep the TRAINABLE parameters in float32 "
                "(master weights; frozen ones stay in half precision). Without it, updates of lr*grad below "
                "the half-precision step round away (lr 5e-7 on bf16 weights barely moves them). DeepSpeed and "
                "FSDP keep their own float32 copies and are left alone"})
    disable_dropout: bool = field(default=True, metadata={
        "help": "switch dropout off in the policy and the reference (as TRL's DPOConfig): with dropout on, "
                "h is not 0 at step 0 and the reference log-probs are noisy"})
    remove_unused_columns: bool = False
    report_to: Any = "none"
    logging_steps: float = 10
    save_only_model: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        check_label_rules(*self.label_constants(), sign_rule=self.enforce_label_signs)
        if self.buffered and self.per_device_train_batch_size % 2:
            raise ValueError("buffered training puts equal safety and helpful pairs in every batch, so "
                             f"per_device_train_batch_size must be even, got {self.per_device_train_batch_size}")

    def label_constants(self):
        """(B1, B2, B3) of Eq. 9 in force: from ``alpha`` (Eq. 14) when set, else ``label_b*``."""
        if self.alpha is not None:
            return alpha_constants(self.alpha)
        return self.label_b1, self.label_b2, self.label_b3

    def case_labels(self) -> Dict[str, float]:
        """The four Figure-3 label values these settings give (logged at the start of training)."""
        return case_label_values(*self.label_constants())


def _set_dotted(d: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise RecipeError(f"override {key!r}: {p!r} is not a section")
    d[parts[-1]] = value


def apply_overrides(recipe: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML: numbers, lists, null)."""
    out = copy.deepcopy(recipe)
    for item in overrides or ():
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(out, key.strip(), yaml.safe_load(raw))
    return out


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a YAML recipe (a path, or the name of a shipped recipe: ``bfpo recipes`` lists them), apply
    overrides, and check its sections and keys (errors name file and key)."""
    from bfpo.train.recipes import RecipeNotFound, resolve_recipe

    try:
        path = resolve_recipe(path)
    except RecipeNotFound as e:
        raise UserPathNotFoundError(str(e)) from None
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with sections {sorted(SECTIONS)}")
    recipe = apply_overrides(recipe, overrides)
    unknown = set(recipe) - SECTIONS
    if unknown:
        raise RecipeError(f"{path}: unknown section(s) {sorted(unknown)}; expected {sorted(SECTIONS)}")
    model = recipe.get("model") or {}
    if "name_or_path" not in model:
        raise RecipeError(f"{path}: model.name_or_path is required")
    _check_keys(path, "model", model, MODEL_KEYS)
    data = recipe.get("data") or {}
    _check_keys(path, "data", data, DATA_KEYS)
    for side in ("safety", "helpful"):
        if data.get(side) is not None:
            if isinstance(data[side], str):
                data[side] = {"source": data[side]}
            _check_keys(path, f"data.{side}", data[side], SOURCE_KEYS)
            if "source" not in data[side]:
                raise RecipeError(f"{path}: data.{side}.source is required")
            data[side]["source"] = _local_source(data[side]["source"], path)
    _check_data_values(path, data)
    train_fields = {f.name for f in fields(BFPOConfig)}
    _check_keys(path, "train", recipe.get("train") or {}, train_fields)
    recipe["_path"] = str(path)
    return recipe


def _check_data_values(path: Path, data: Dict[str, Any]) -> None:
    """The ``data`` section's values that are not TrainingArguments fields: mode, on_error, seed and each
    source's limit and shuffle (types and ranges; RecipeError naming the key)."""
    from bfpo.data.adapters import ON_ERROR, SCHEMAS
    from bfpo.data.modes import MODES

    choices = {"mode": MODES, "on_error": ON_ERROR}
    for key, allowed in choices.items():
        if key in data and data[key] not in allowed:
            raise RecipeError(f"{path}: data.{key}: expected one of {', '.join(allowed)}, got {data[key]!r}")
    if "seed" in data:
        data["seed"] = validated_value(str(path), "data.seed", data["seed"], int)
    for side in ("safety", "helpful"):
        spec = data.get(side) or {}
        if spec.get("schema") is not None and spec["schema"] not in SCHEMAS:
            raise RecipeError(f"{path}: data.{side}.schema: expected one of {', '.join(SCHEMAS)}, "
                              f"got {spec['schema']!r}")
        if spec.get("limit") is not None:
            spec["limit"] = validated_value(str(path), f"data.{side}.limit", spec["limit"], int)
            if spec["limit"] < 0:
                raise RecipeError(f"{path}: data.{side}.limit: must be >= 0, got {spec['limit']}")
        if spec.get("shuffle") is not None:
            spec["shuffle"] = validated_value(str(path), f"data.{side}.shuffle", spec["shuffle"], bool)
        if spec.get("column_map") is not None and not isinstance(spec["column_map"], dict):
            raise RecipeError(f"{path}: data.{side}.column_map: expected a mapping of field -> column, "
                              f"got {spec['column_map']!r}")


def _local_source(source: Any, recipe_path: Path) -> Any:
    """A relative data file is looked up in the working directory, then next to the recipe (so shipped
    recipes find their shipped data); anything else (hub names, absolute paths) is returned as is."""
    if not isinstance(source, str) or Path(source).is_absolute() or Path(source).exists():
        return source
    beside = recipe_path.parent / source
    return str(beside) if beside.exists() else source


def _check_keys(path, section, d, allowed) -> None:
    if not isinstance(d, dict):
        raise RecipeError(f"{path}: section {section!r} must be a mapping")
    bad = sorted(set(d) - set(allowed))
    if bad:
        import difflib

        hints = []
        for key in bad:
            close = difflib.get_close_matches(key, sorted(allowed), n=3)
            hints.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        listing = f"; allowed: {sorted(allowed)}" if len(allowed) <= 20 else ""
        raise RecipeError(f"{path}: unknown key(s) in {section!r}: {'; '.join(hints)}{listing}")


# ------------------------------------------------------------------------------ value validation
#: Ranges of TrainingArguments/BFPOConfig/SFTConfig fields (types come from the dataclasses themselves).
#: name -> (test of a non-None value, what is expected).
RANGES: Dict[str, tuple] = {
    "learning_rate": (lambda v: v >= 0, ">= 0"),
    "num_train_epochs": (lambda v: v > 0, "> 0"),
    "max_steps": (lambda v: v == -1 or v > 0, "> 0, or -1 to train for num_train_epochs"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "per_device_train_batch_size": (lambda v: v >= 1, ">= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "logging_steps": (lambda v: v > 0, "> 0"),
    "save_steps": (lambda v: v > 0, "> 0"),
    "eval_steps": (lambda v: v > 0, "> 0"),
    "save_total_limit": (lambda v: v >= 1, ">= 1"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v >= 0, ">= 0"),
    "dataloader_num_workers": (lambda v: v >= 0, ">= 0"),
    # the loss squares g_I / tau in float32: below 1e-18 it overflows to inf at the first step
    "tau": (lambda v: v >= 1e-18, ">= 1e-18 (the loss squares g_I/tau in float32)"),
    "max_length": (lambda v: v >= 1, ">= 1"),
    "max_prompt_length": (lambda v: v >= 1, ">= 1"),
    "logps_chunk_size": (lambda v: v >= 1, ">= 1"),
    "safedpo_delta": (lambda v: v >= 0, ">= 0"),
}
_TRUE_WORDS, _FALSE_WORDS = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_SKIP = object()  # a type this check does not judge (Any, dicts, config objects): left to the dataclass


def _union_members(hint: Any) -> tuple:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _as_member(value: Any, member: Any) -> Any:
    """``value`` as an instance of one union ``member`` (str -> number, int -> float, str -> [str]),
    ``_SKIP`` for types not judged here, or raise ValueError when it cannot be one."""
    origin = typing.get_origin(member)
    if member is type(None):
        if value is None:
            return None
        raise ValueError
    if member is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise ValueError
    if member is int:
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip()) if isinstance(value, str) else value
        if isinstance(number, (int, float)) and math.isfinite(number) and float(number).is_integer():
            return int(number)
        raise ValueError
    if member is float:
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip()) if isinstance(value, str) else value
        if isinstance(number, (int, float)) and not math.isnan(number):
            return float(number)
        raise ValueError
    if member is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if isinstance(member, type) and issubclass(member, enum.Enum):
        allowed = [e.value for e in member]
        if value in allowed or isinstance(value, member):
            return value
        raise ValueError
    if origin is list:
        (item,) = typing.get_args(member) or (Any,)
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and (item is not str or all(isinstance(x, str) for x in items)):
            return list(items)
        raise ValueError
    return _SKIP


def _describe(members: tuple) -> str:
    names = []
    for m in members:
        if m is type(None):
            names.append("null")
        elif isinstance(m, type) and issubclass(m, enum.Enum):
            names.append("one of " + ", ".join(str(e.value) for e in m))
        elif typing.get_origin(m) is list:
            names.append("a list of " + getattr((typing.get_args(m) or (Any,))[0], "__name__", "values"))
        else:
            names.append({bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(
                m, getattr(m, "__name__", str(m))))
    return " or ".join(dict.fromkeys(names))


def coerce_field(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the dataclass field type ``hint`` (YAML's ``1e-5`` string -> float, a single
    string -> a one-element list); ValueError saying what was expected when it cannot be."""
    members = _union_members(hint)
    enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
    if enums and value is not None:  # ``SaveStrategy | str``: the text must still name a member
        allowed = [str(e.value) for m in enums for e in m]
        if value is False and "no" in allowed:  # YAML 1.1 reads an unquoted `no` as false
            return "no"
        if isinstance(value, (str, enum.Enum)) and str(getattr(value, "value", value)) in allowed:
            return value
        raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
    # an exact instance first, so that "1" for ``str | int`` stays text and 1 for ``float | int`` stays int
    for member in members:
        if isinstance(member, type) and not issubclass(member, enum.Enum) and type(value) is member:
            return value
    if value is None and type(None) in members:
        return None
    judged = False
    for member in members:
        try:
            out = _as_member(value, member)
        except (TypeError, ValueError):
            judged = True
            continue
        if out is _SKIP:
            return value
        return out
    if not judged:
        return value
    raise ValueError(f"expected {_describe(members)}, got {value!r}")


def _check_range(name: str, value: Any) -> None:
    if name in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
        test, expected = RANGES[name]
        if not test(value):
            raise ValueError(f"must be {expected}, got {value!r}")


def _check_patterns(value: Any) -> None:
    for pattern in value or ():
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({e})") from None


def validate_section(recipe: Dict[str, Any], section: str, config_cls: type) -> Dict[str, Any]:
    """The recipe's ``section`` with every value converted to its ``config_cls`` field type and checked
    against :data:`RANGES` (and regexes compiled for ``trainable``); :class:`RecipeError` naming the file
    and ``section.key`` otherwise. Runs before anything is loaded."""
    values = recipe.get(section) or {}
    where = recipe.get("_path", "recipe")
    _check_keys(where, section, values, {f.name for f in fields(config_cls)})
    hints = typing.get_type_hints(config_cls)
    return {name: validated_value(where, f"{section}.{name}", value, hints[name]) for name, value in values.items()}


def validated_value(where: str, key: str, value: Any, hint: Any) -> Any:
    """One value of dotted ``key`` converted to ``hint`` and range-checked; RecipeError naming the key."""
    name = key.rsplit(".", 1)[-1]
    try:
        out = coerce_field(name, value, hint)
        _check_range(name, out)
        if name == "trainable":
            _check_patterns(out)
    except ValueError as e:
        raise RecipeError(f"{where}: {key}: {e}") from None
    return out


def check_stage(recipe: Dict[str, Any], stage: str) -> None:
    """A recipe run by ``bfpo train`` must not carry ``sft:`` keys, one run by ``bfpo sft`` no ``train:``
    keys: they would be silently ignored."""
    other = {"train": "sft", "sft": "train"}[stage]
    if recipe.get(other):
        keys = ", ".join(f"{other}.{k}" for k in recipe[other])
        raise RecipeError(f"{recipe.get('_path', 'recipe')}: {keys} given to 'bfpo {stage}', which reads only "
                          f"the '{stage}' section; move the keys to '{stage}' or run 'bfpo {other}'")


def add_recipe_arguments(p, example_override: str, stage: str = "train", config_cls: Optional[type] = None) -> None:
    """The command-line shape shared by ``bfpo train`` and ``bfpo sft``: a recipe, --resume, overrides;
    ``--help`` lists every recipe key (:func:`recipe_help`)."""
    import argparse

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = recipe_help(stage, config_cls or BFPOConfig)
    p.add_argument("--config", required=True,
                   help="YAML recipe: a path, or a shipped recipe's name (`bfpo recipes` lists them)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an output_dir that holds files bfpo did not write (a finished model is "
                        "still never overwritten)")
    p.add_argument("overrides", nargs="*", help=f"section.key=value overrides, e.g. {example_override}")


def make_config(recipe: Dict[str, Any], **defaults) -> BFPOConfig:
    """Build the ``BFPOConfig`` of a recipe's ``train`` section (``defaults`` fill missing keys)."""
    check_stage(recipe, "train")
    train = {**defaults, **validate_section(recipe, "train", BFPOConfig)}
    data = recipe.get("data") or {}
    hints = typing.get_type_hints(BFPOConfig)
    for k in ("max_length", "max_prompt_length"):
        if k in data and k not in train:
            train[k] = validated_value(recipe.get("_path", "recipe"), f"data.{k}", data[k], hints[k])
    try:
        return BFPOConfig(**train)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{recipe.get('_path', 'recipe')}: train: {e}") from None
