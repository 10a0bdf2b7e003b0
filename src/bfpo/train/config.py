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
import dataclasses
import enum
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml
from transformers import TrainingArguments

from bfpo.args import choices
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


#: what ``bfpo train`` / ``bfpo sft`` do besides the settings of the run itself
@dataclass
class RunArguments:
    """How a command treats its output folder (not written to the run's ``config.yaml``)."""

    resume: bool = field(default=False, metadata={
        "help": "continue from the last checkpoint in output_dir (a run that has none starts from the beginning)"})
    overwrite: bool = field(default=False, metadata={
        "help": "write into an output_dir that holds files bfpo did not write (a finished model is still never "
                "overwritten)"})


@dataclass
class ModelArguments:
    """The model and tokenizer to train. Names follow TRL's ``ModelConfig`` where the meaning is the same."""

    model_name_or_path: str = field(metadata={"help": "hub model name or local model folder (required)"})
    model_revision: Optional[str] = field(default=None, metadata={
        "help": "the hub model's commit, branch or tag (default: main)"})
    dtype: str = choices("float32", "bfloat16", "float16", "auto", default="float32",
                         help="dtype the weights are loaded in (auto: as stored)")
    trust_remote_code: bool = field(default=False, metadata={
        "help": "run the model repository's own Python code (off unless you have read it)"})
    attn_implementation: Optional[str] = field(default=None, metadata={
        "help": "attention kernel: eager, sdpa, flash_attention_2, ... (default: the model's)"})
    use_peft: bool = field(default=False, metadata={
        "help": "train LoRA adapters (lora_*) instead of the weights; the reference is the base model with the "
                "adapters off, and trainable is not used"})
    lora_r: int = field(default=16, metadata={"help": "use_peft: LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "use_peft: LoRA scaling alpha (not BFPO's alpha)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "use_peft: dropout of the LoRA layers"})
    lora_target_modules: Optional[List[str]] = field(default=None, metadata={
        "help": "use_peft: module names that get adapters, e.g. down_proj (default: peft's choice for the model)"})
    tokenizer_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "a different tokenizer folder or hub name (default: the model's)"})
    chat_template: Optional[str] = field(default=None, metadata={
        "help": "built-in template name (zephyr, chatml) or a Jinja string; required when the tokenizer has "
                "none. It is saved with the model, so later stages render prompts the same way"})
    gguf_file: Optional[str] = field(default=None, metadata={"help": "load this .gguf file of the model folder"})


def _source_fields(side: str, what: str) -> Dict[str, Any]:
    """The seven fields of one data source (``safety_*`` or ``helpful_*``), as dataclass fields."""
    from bfpo.data.adapters import SCHEMAS

    return {
        "source": field(default=None, metadata={
            "help": f"{what}: hub dataset name or a local .jsonl/.json/.csv/.parquet file (a relative path not "
                    "found in the working directory is looked up beside the --config file)"}),
        "schema": choices(*SCHEMAS, default="auto", help=f"{what}: the columns' layout (auto: detected)"),
        "split": field(default=None, metadata={"help": f"{what}: hub split, e.g. train or train_prefs"}),
        "limit": field(default=None, metadata={
            "help": f"{what}: keep this many rows, a seeded random subset (data_seed) unless {side}_shuffle is "
                    "false"}),
        "column_map": field(default=None, metadata={
            "help": f"{what}: schema generic: canonical field -> column name, as a YAML mapping in the file or "
                    "JSON text on the command line"}),
        "revision": field(default=None, metadata={
            "help": f"{what}: the hub dataset's commit, branch or tag (pin it to reproduce a run)"}),
        "shuffle": field(default=None, metadata={
            "help": f"{what}: shuffle before {side}_limit (default: true when a limit is set)"}),
    }


def _data_arguments():
    from bfpo.data.adapters import ON_ERROR
    from bfpo.data.modes import MODES

    types_ = {"source": Optional[str], "schema": str, "split": Optional[str], "limit": Optional[int],
              "column_map": Optional[Union[dict, str]], "revision": Optional[str], "shuffle": Optional[bool]}
    spec = [("mode", str, choices(*MODES, default="bfpo",
                                  help="bfpo (buffered, Algorithm 1), bfpo_no_buffer, dpo_h, dpo_s or mix "
                                       "(Table 1 / Table 4); bfpo sft ignores it"))]
    for side, what in (("safety", "the safety pairs"), ("helpful", "the helpfulness pairs")):
        spec += [(f"{side}_{k}", types_[k], f) for k, f in _source_fields(side, what).items()]
    spec += [("on_error", str, choices(*ON_ERROR, default="raise",
                                       help="raise on an invalid row, or drop it (the drops are counted)")),
             ("data_seed", Optional[int], field(default=None, metadata={
                 "help": "seed of the source subsets (*_limit) and of the mix's shuffle; default: seed. The same "
                         "field of TrainingArguments seeds its data sampler"}))]
    return spec


def _parse_column_maps(self) -> None:
    for side in ("safety", "helpful"):
        name = f"{side}_column_map"
        value = getattr(self, name)
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ValueError(f"{name}: not a JSON/YAML mapping: {e}") from None
        if value is not None and not (isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            raise ValueError(f"{name}: expected a mapping of field -> column name, got {value!r}")
        setattr(self, name, value)


#: Where the pairs come from and how they make the training set (flat: ``safety_source``, ``helpful_limit``...)
DataArguments = dataclasses.make_dataclass(
    "DataArguments", _data_arguments(), namespace={
        "__post_init__": _parse_column_maps,
        "__doc__": "Where the pairs come from (``safety_*`` and ``helpful_*`` sources) and how they become the "
                   "training set (``mode``).",
        "__module__": __name__})


class RecipeError(UserInputError):
    """A recipe that cannot run; the message names the file and the key (a ``ValueError``)."""


@dataclass
class BFPOConfig(TrainingArguments):
    """``transformers.TrainingArguments`` plus the BFPO objective and trainer settings.

    The names follow TRL's ``DPOConfig`` where they mean the same thing (``max_length``,
    ``max_prompt_length``, ``precompute_ref_log_probs``, ``padding_free``, ``disable_dropout``); ``tau`` is the
    paper's KL coefficient, TRL's ``beta`` (``docs/recipes.md`` maps every name to the paper and to TRL).
    """

    loss: str = choices(*LOSSES, default="bfpo",
                        help="bfpo (Eq. 15), dpo (Eq. 4), ipo, or safedpo (Kim et al.)")
    tau: float = field(default=0.01, metadata={
        "help": "KL penalty tau of Eq. 15 (TRL's beta; section 4.2 uses 0.01)"})
    alpha: Optional[float] = field(default=0.5, metadata={
        "help": "label shift of Eq. 14 (0 < alpha < 1 keeps Figure 3's signs; 0.5 gives +1/+0.5/-0.5/-1, the "
                "official recipe); null -> use label_b1..label_b3"})
    label_b1: float = field(default=3.0, metadata={"help": "B1 of Eq. 9, used only when alpha is null"})
    label_b2: float = field(default=-1.0, metadata={"help": "B2 of Eq. 9, used only when alpha is null"})
    label_b3: float = field(default=0.5, metadata={"help": "B3 of Eq. 9, used only when alpha is null"})
    safedpo_delta: float = field(default=0.0, metadata={
        "help": "loss safedpo only: SafeDPO's safety margin Delta (Kim et al., Eq. 12); >= 0"})
    enforce_label_signs: bool = field(default=True, metadata={
        "help": "refuse labels that break section 3.1's sign rule (cases 1-2 > 0, cases 3-4 < 0); false only "
                "warns, for ablations such as Table 4's alpha = 0"})
    trainable: Optional[List[str]] = field(default=None, metadata={
        "help": "regexes of the trainable parameter names, theta' of Algorithm 1 (paper: down_proj); null = all"})
    buffered: bool = field(default=True, metadata={
        "help": "equal safety/helpful pairs in every batch (Algorithm 1, line 4); the data mode sets it"})
    precompute_ref_log_probs: bool = field(default=True, metadata={
        "help": "score every pair with the reference once before training (and cache it) instead of keeping "
                "a second model"})
    ref_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "folder of the reference log-prob cache (default: the user cache folder)"})
    max_length: int = field(default=1024, metadata={"help": "tokens of prompt + response; longer pairs are cut"})
    max_prompt_length: Optional[int] = field(default=512, metadata={
        "help": "tokens of the prompt, cut from the left"})
    logps_chunk_size: int = field(default=1024, metadata={
        "help": "tokens per tile of the log-prob computation (memory, never results)"})
    pad_to_multiple_of: Optional[int] = field(default=None, metadata={
        "help": "pad every batch to a multiple of this many tokens"})
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
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "kept false: the trainer needs its own columns"})
    report_to: Any = field(default="none", metadata={
        "help": "where to log besides metrics.jsonl: none, tensorboard, wandb, ..."})
    logging_steps: float = field(default=10, metadata={"help": "log every this many steps"})
    save_only_model: bool = field(default=False, metadata={
        "help": "checkpoints without optimizer state (then --resume cannot continue them exactly)"})

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


def recipe_arguments(recipe: Dict[str, Any]):
    """(ModelArguments, DataArguments) of a nested recipe of :func:`load_recipe` (its model and data
    sections under the flat names), until the flat ``--config`` files replace the nested recipes."""
    model = dict(recipe["model"])
    lora = model.pop("lora", None) or {}
    renames = {"name_or_path": "model_name_or_path", "revision": "model_revision",
               "tokenizer": "tokenizer_name_or_path"}
    margs = {renames.get(k, k): v for k, v in model.items()}
    if lora:
        margs.update(use_peft=True, lora_r=lora.get("r", 16), lora_alpha=lora.get("lora_alpha", 32),
                     lora_dropout=lora.get("lora_dropout", 0.05), lora_target_modules=lora.get("target_modules"))
    data = recipe.get("data") or {}
    dargs = {"mode": data.get("mode", "bfpo"), "on_error": data.get("on_error", "raise"),
             "data_seed": data.get("seed", 0)}
    for side in ("safety", "helpful"):
        dargs.update({f"{side}_{k}": v for k, v in (data.get(side) or {}).items()})
    return ModelArguments(**margs), DataArguments(**dargs)


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


# ------------------------------------------------------------------------------ writing settings back
#: fields never written beside a model (credentials)
SECRET_FIELDS = {"hub_token"}


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _unset(value: Any) -> Any:
    """None for the values ``__post_init__`` methods turn an unset field into (False, [], "none")."""
    return None if value is None or value is False or (isinstance(value, (str, list)) and value in ("", "none", []))\
        else value


def settings_to_write(*instances: Any) -> Dict[str, Any]:
    """The settings of dataclass ``instances`` as one flat mapping for a ``--config`` file: the required
    fields, ``output_dir``, and every field whose value differs from its declared default. Credentials and
    values that are not plain YAML (objects) are left out."""
    from bfpo.args import to_dict

    out: Dict[str, Any] = {}
    for inst in instances:
        declared = {f.name: f for f in fields(type(inst))}
        for name, value in to_dict(inst).items():
            f = declared[name]
            value = list(value) if isinstance(value, tuple) else value
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = dataclasses.MISSING  # required: always written
            default = default.value if isinstance(default, enum.Enum) else default
            if name in SECRET_FIELDS or not _plain(value):
                continue
            if _unset(value) == _unset(default) and name != "output_dir":
                continue
            out[name] = value
    return out
