"""Settings of the training commands: ``ModelArguments``, ``DataArguments``, ``BFPOConfig``, ``RunArguments``.

``bfpo train`` reads ``[ModelArguments, DataArguments, BFPOConfig, RunArguments]`` and ``bfpo sft``
``[ModelArguments, DataArguments, trl.SFTConfig, RunArguments]`` with :func:`bfpo.args.parse`: a flat YAML
``--config`` file (a path or a shipped recipe's name) and ``--field value`` flags that win over it::

    bfpo train --config paper_mistral_bfpo --tau 0.1 --safety_limit 1000 --output_dir runs/x

Names follow TRL where the meaning is the same (``ModelConfig``: ``model_name_or_path``, ``lora_r``...;
``DPOConfig``: ``max_length``, ``max_prompt_length``, ``precompute_ref_log_probs``); ``tau`` is TRL's
``beta``. ``docs/recipes.md`` maps every setting to the paper's notation and to TRL.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Union

import yaml
from transformers import TrainingArguments

from bfpo.args import choices
from bfpo.objective import LOSSES, alpha_constants, case_label_values, check_label_rules


#: what ``bfpo train`` / ``bfpo sft`` do besides the settings of the run itself
@dataclass
class RunArguments:
    """How a command treats its output folder (not written to the run's ``config.yaml``)."""

    resume: bool = field(
        default=False,
        metadata={
            "help": "continue from the last checkpoint in output_dir (a run that has none starts from the beginning)"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "write into an output_dir that holds files bfpo did not write (a finished model is still never "
            "overwritten)"
        },
    )


@dataclass
class ModelArguments:
    """The model and tokenizer to train. Names follow TRL's ``ModelConfig`` where the meaning is the same."""

    model_name_or_path: str = field(metadata={"help": "hub model name or local model folder (required)"})
    model_revision: Optional[str] = field(
        default=None, metadata={"help": "the hub model's commit, branch or tag (default: main)"}
    )
    dtype: str = choices(
        "float32",
        "bfloat16",
        "float16",
        "auto",
        default="float32",
        help="dtype the weights are loaded in (auto: as stored)",
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run the model repository's own Python code (off unless you have read it)"}
    )
    attn_implementation: Optional[str] = field(
        default=None, metadata={"help": "attention kernel: eager, sdpa, flash_attention_2, ... (default: the model's)"}
    )
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "train LoRA adapters (lora_*) instead of the weights; the reference is the base model with the "
            "adapters off, and trainable is not used"
        },
    )
    lora_r: int = field(default=16, metadata={"help": "use_peft: LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "use_peft: LoRA scaling alpha (not BFPO's alpha)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "use_peft: dropout of the LoRA layers"})
    lora_target_modules: Optional[List[str]] = field(
        default=None,
        metadata={
            "help": "use_peft: module names that get adapters, e.g. down_proj (default: peft's choice for the model)"
        },
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "a different tokenizer folder or hub name (default: the model's)"}
    )
    chat_template: Optional[str] = field(
        default=None,
        metadata={
            "help": "built-in template name (zephyr, chatml) or a Jinja string; required when the tokenizer has "
            "none. It is saved with the model, so later stages render prompts the same way"
        },
    )
    gguf_file: Optional[str] = field(default=None, metadata={"help": "load this .gguf file of the model folder"})


def _source_fields(side: str, what: str) -> Dict[str, Any]:
    """The seven fields of one data source (``safety_*`` or ``helpful_*``), as dataclass fields."""
    from bfpo.data.adapters import SCHEMAS

    return {
        "source": field(
            default=None,
            metadata={
                "help": f"{what}: hub dataset name or a local .jsonl/.json/.csv/.parquet file (a relative path not "
                "found in the working directory is looked up beside the --config file)"
            },
        ),
        "schema": choices(*SCHEMAS, default="auto", help=f"{what}: the columns' layout (auto: detected)"),
        "split": field(default=None, metadata={"help": f"{what}: hub split, e.g. train or train_prefs"}),
        "limit": field(
            default=None,
            metadata={
                "help": f"{what}: keep this many rows, a seeded random subset (data_seed) unless {side}_shuffle is "
                "false"
            },
        ),
        "column_map": field(
            default=None,
            metadata={
                "help": f"{what}: schema generic: canonical field -> column name, as a YAML mapping in the file or "
                "JSON text on the command line"
            },
        ),
        "revision": field(
            default=None,
            metadata={"help": f"{what}: the hub dataset's commit, branch or tag (pin it to reproduce a run)"},
        ),
        "shuffle": field(
            default=None, metadata={"help": f"{what}: shuffle before {side}_limit (default: true when a limit is set)"}
        ),
    }


def _data_arguments():
    from bfpo.data.adapters import ON_ERROR
    from bfpo.data.modes import MODES

    types_ = {
        "source": Optional[str],
        "schema": str,
        "split": Optional[str],
        "limit": Optional[int],
        "column_map": Optional[Union[dict, str]],
        "revision": Optional[str],
        "shuffle": Optional[bool],
    }
    spec = [
        (
            "mode",
            str,
            choices(
                *MODES,
                default="bfpo",
                help="bfpo (buffered, Algorithm 1), bfpo_no_buffer, dpo_h, dpo_s or mix "
                "(Table 1 / Table 4); bfpo sft ignores it",
            ),
        )
    ]
    for side, what in (("safety", "the safety pairs"), ("helpful", "the helpfulness pairs")):
        spec += [(f"{side}_{k}", types_[k], f) for k, f in _source_fields(side, what).items()]
    spec += [
        (
            "on_error",
            str,
            choices(*ON_ERROR, default="raise", help="raise on an invalid row, or drop it (the drops are counted)"),
        ),
        (
            "data_seed",
            Optional[int],
            field(
                default=None,
                metadata={
                    "help": "seed of the source subsets (*_limit) and of the mix's shuffle; default: seed. The same "
                    "field of TrainingArguments seeds its data sampler"
                },
            ),
        ),
    ]
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
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            raise ValueError(f"{name}: expected a mapping of field -> column name, got {value!r}")
        setattr(self, name, value)


#: Where the pairs come from and how they make the training set (flat: ``safety_source``, ``helpful_limit``...)
DataArguments = dataclasses.make_dataclass(
    "DataArguments",
    _data_arguments(),
    namespace={
        "__post_init__": _parse_column_maps,
        "__doc__": "Where the pairs come from (``safety_*`` and ``helpful_*`` sources) and how they become the "
        "training set (``mode``).",
        "__module__": __name__,
    },
)


@dataclass
class BFPOConfig(TrainingArguments):
    """``transformers.TrainingArguments`` plus the BFPO objective and trainer settings.

    The names follow TRL's ``DPOConfig`` where they mean the same thing (``max_length``,
    ``max_prompt_length``, ``precompute_ref_log_probs``, ``padding_free``, ``disable_dropout``); ``tau`` is the
    paper's KL coefficient, TRL's ``beta`` (``docs/recipes.md`` maps every name to the paper and to TRL).
    """

    loss: str = choices(*LOSSES, default="bfpo", help="bfpo (Eq. 15), dpo (Eq. 4), ipo, or safedpo (Kim et al.)")
    tau: float = field(default=0.01, metadata={"help": "KL penalty tau of Eq. 15 (TRL's beta; section 4.2 uses 0.01)"})
    alpha: Optional[float] = field(
        default=0.5,
        metadata={
            "help": "label shift of Eq. 14 (0 < alpha < 1 keeps Figure 3's signs; 0.5 gives +1/+0.5/-0.5/-1, the "
            "official recipe); null -> use label_b1..label_b3"
        },
    )
    label_b1: float = field(default=3.0, metadata={"help": "B1 of Eq. 9, used only when alpha is null"})
    label_b2: float = field(default=-1.0, metadata={"help": "B2 of Eq. 9, used only when alpha is null"})
    label_b3: float = field(default=0.5, metadata={"help": "B3 of Eq. 9, used only when alpha is null"})
    safedpo_delta: float = field(
        default=0.0, metadata={"help": "loss safedpo only: SafeDPO's safety margin Delta (Kim et al., Eq. 12); >= 0"}
    )
    safe_nll_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of an NLL term on the safe response the global ranking puts first "
            "(bfpo.objective.safe_response_nll; not in the paper's Eq. 15, 0 = off); >= 0"
        },
    )
    enforce_label_signs: bool = field(
        default=True,
        metadata={
            "help": "refuse labels that break section 3.1's sign rule (cases 1-2 > 0, cases 3-4 < 0); false only "
            "warns, for ablations such as Table 4's alpha = 0"
        },
    )
    trainable: Optional[List[str]] = field(
        default=None,
        metadata={
            "help": "regexes of the trainable parameter names, theta' of Algorithm 1 (paper: down_proj); null = all"
        },
    )
    buffered: bool = field(
        default=True,
        metadata={"help": "equal safety/helpful pairs in every batch (Algorithm 1, line 4); the data mode sets it"},
    )
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={
            "help": "score every pair with the reference once before training (and cache it) instead of keeping "
            "a second model"
        },
    )
    ref_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "folder of the reference log-prob cache (default: the user cache folder)"}
    )
    max_length: int = field(default=1024, metadata={"help": "tokens of prompt + response; longer pairs are cut"})
    max_prompt_length: Optional[int] = field(default=512, metadata={"help": "tokens of the prompt, cut from the left"})
    logps_chunk_size: int = field(
        default=1024, metadata={"help": "tokens per tile of the log-prob computation (memory, never results)"}
    )
    pad_to_multiple_of: Optional[int] = field(
        default=None, metadata={"help": "pad every batch to a multiple of this many tokens"}
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "pack chosen+rejected sequences into one row without padding (position_ids restart per sequence)"
        },
    )
    fp32_trainable_params: bool = field(
        default=True,
        metadata={
            "help": "with bf16/fp16 autocast and a half-precision model, keep the TRAINABLE parameters in float32 "
            "(master weights; frozen ones stay in half precision). Without it, updates of lr*grad below "
            "the half-precision step round away (lr 5e-7 on bf16 weights barely moves them). DeepSpeed and "
            "FSDP keep their own float32 copies and are left alone"
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "switch dropout off in the policy and the reference (as TRL's DPOConfig): with dropout on, "
            "h is not 0 at step 0 and the reference log-probs are noisy"
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "kept false: the trainer needs its own columns"}
    )
    report_to: Union[None, str, List[str]] = field(
        default="none", metadata={"help": "where to log besides metrics.jsonl: none, tensorboard, wandb, ..."}
    )
    logging_steps: float = field(default=10, metadata={"help": "log every this many steps"})
    save_only_model: bool = field(
        default=False,
        metadata={"help": "checkpoints without optimizer state (then --resume cannot continue them exactly)"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        check_label_rules(*self.label_constants(), sign_rule=self.enforce_label_signs)
        if not self.safe_nll_weight >= 0:
            raise ValueError(f"safe_nll_weight must be >= 0, got {self.safe_nll_weight}")
        if self.buffered and self.per_device_train_batch_size % 2:
            raise ValueError(
                "buffered training puts equal safety and helpful pairs in every batch, so "
                f"per_device_train_batch_size must be even, got {self.per_device_train_batch_size}"
            )

    def label_constants(self):
        """(B1, B2, B3) of Eq. 9 in force: from ``alpha`` (Eq. 14) when set, else ``label_b*``."""
        if self.alpha is not None:
            return alpha_constants(self.alpha)
        return self.label_b1, self.label_b2, self.label_b3

    def case_labels(self) -> Dict[str, float]:
        """The four Figure-3 label values these settings give (logged at the start of training)."""
        return case_label_values(*self.label_constants())


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
    return (
        None
        if value is None or value is False or (isinstance(value, (str, list)) and value in ("", "none", []))
        else value
    )


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
