"""Configuration: ``BFPOConfig`` (TrainingArguments + the BFPO knobs) and YAML recipes.

A recipe is a YAML file with three sections, in the spirit of torchtune's configs::

    model:  {name_or_path, dtype, trust_remote_code, attn_implementation, revision, gguf_file, lora}
    data:   {mode, safety: {source, schema, split, limit, column_map}, helpful: {...},
             max_length, max_prompt_length, on_error}
    train:  any field of BFPOConfig (TrainingArguments fields + loss, tau, alpha, trainable, ...)
    sft:    (for ``bfpo sft``) any field of trl.SFTConfig

Overrides on the command line use dotted keys: ``train.tau=0.1 data.safety.limit=100``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from transformers import TrainingArguments

from bfpo.objective import LOSSES, alpha_constants, case_label_values, check_constants

SECTIONS = {"model", "data", "train", "sft"}
MODEL_KEYS = {"name_or_path", "dtype", "trust_remote_code", "attn_implementation", "revision", "gguf_file",
              "lora", "tokenizer"}
DATA_KEYS = {"mode", "safety", "helpful", "max_length", "max_prompt_length", "on_error", "seed"}
SOURCE_KEYS = {"source", "schema", "split", "limit", "column_map"}


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and the key."""


@dataclass
class BFPOConfig(TrainingArguments):
    """``transformers.TrainingArguments`` plus the BFPO objective and trainer settings.

    The names follow TRL's ``DPOConfig`` where they mean the same thing (``max_length``,
    ``max_prompt_length``, ``precompute_ref_log_probs``); ``tau`` is the paper's KL coefficient
    (TRL's ``beta``).
    """

    loss: str = field(default="bfpo", metadata={"help": "bfpo (Eq. 15), dpo (Eq. 4) or ipo"})
    tau: float = field(default=0.01, metadata={"help": "KL penalty tau (section 4.2 uses 0.01)"})
    alpha: Optional[float] = field(default=0.5, metadata={"help": "label shift of Eq. 14; None -> use B1..B3"})
    label_b1: float = 3.0
    label_b2: float = -1.0
    label_b3: float = 0.5
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
        b1, _, b3 = self.label_constants()
        check_constants(b1, b3)
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
    """Read a YAML recipe, apply overrides, and check its sections and keys (errors name file and key)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
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
    train_fields = {f.name for f in fields(BFPOConfig)}
    _check_keys(path, "train", recipe.get("train") or {}, train_fields)
    recipe["_path"] = str(path)
    return recipe


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


def add_recipe_arguments(p, example_override: str) -> None:
    """The command-line shape shared by ``bfpo train`` and ``bfpo sft``: a recipe, --resume, overrides."""
    p.add_argument("--config", required=True, help="YAML recipe (see recipes/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("overrides", nargs="*", help=f"section.key=value overrides, e.g. {example_override}")


def make_config(recipe: Dict[str, Any], **defaults) -> BFPOConfig:
    """Build the ``BFPOConfig`` of a recipe's ``train`` section (``defaults`` fill missing keys)."""
    train = {**defaults, **(recipe.get("train") or {})}
    data = recipe.get("data") or {}
    for k in ("max_length", "max_prompt_length"):
        if k in data and k not in train:
            train[k] = data[k]
    try:
        return BFPOConfig(**train)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{recipe.get('_path', 'recipe')}: train: {e}") from None
