"""Loading models for training and writing the trained model directory (weights, tokenizer, card)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from bfpo.errors import OutputExistsError, TrainingDivergedError, UserInputError, UserPathNotFoundError

logger = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(name: Optional[str]):
    if name in (None, "auto"):
        return "auto" if name == "auto" else torch.float32
    if name not in DTYPES:
        raise UserInputError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


def check_model_source(name: str, key: str = "model_name_or_path") -> None:
    """Fail with "not found" for a model path that does not exist, instead of letting the hub client
    report it as a malformed repo id. A name counts as a path when it exists, starts with ``.``, ``/`` or
    ``~``, or has more than one ``/`` (a hub id is ``owner/name``)."""
    if Path(name).expanduser().exists():
        return
    if str(name).startswith((".", "/", "~")) or str(name).count("/") > 1 or "\\" in str(name):
        raise UserPathNotFoundError(f"{key}: model folder {name} not found")


def check_model_reachable(name: str, key: str) -> None:
    """Before any generation: ``name`` is a local model folder, or a hub model whose config can be read
    (from the local cache when offline); a user error naming ``key`` otherwise."""
    check_model_source(name, key)
    if Path(name).expanduser().is_dir():
        return
    from transformers.utils import cached_file

    try:
        cached_file(name, "config.json")
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"{key} {name}: model not reachable ({first})") from None


def from_pretrained_or_user_error(loader, name: str, key: str, **kwargs):
    """``loader.from_pretrained(name, **kwargs)``, with "no such model here or on the hub" and "folder
    without the expected files" reported as one-line user errors naming ``key``."""
    check_model_source(name, key)
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"{key}: cannot load {name!r}: {first}") from e


def model_arguments(spec: Any):
    """``spec`` as :class:`~bfpo.train.config.ModelArguments`: returned as is, or made from a model folder /
    hub name."""
    from bfpo.train.config import ModelArguments

    if isinstance(spec, ModelArguments):
        return spec
    if isinstance(spec, (str, Path)):
        return ModelArguments(model_name_or_path=str(spec))
    raise TypeError(f"expected ModelArguments or a model folder, got {type(spec).__name__}")


def load_tokenizer(spec: Any):
    """The tokenizer of :class:`~bfpo.train.config.ModelArguments` ``spec``, with its ``chat_template``
    applied (:func:`prepare_tokenizer`)."""
    from transformers import AutoTokenizer

    args = model_arguments(spec)
    name = args.tokenizer_name_or_path or args.model_name_or_path
    kw = {"trust_remote_code": args.trust_remote_code, "revision": args.model_revision}
    if args.gguf_file and not args.tokenizer_name_or_path:
        kw["gguf_file"] = args.gguf_file
    tok = from_pretrained_or_user_error(
        AutoTokenizer, name, "tokenizer_name_or_path" if args.tokenizer_name_or_path else "model_name_or_path", **kw
    )
    return prepare_tokenizer(tok, args.chat_template, name)


def prepare_tokenizer(tokenizer, chat_template: Optional[str], name: str):
    """Apply ``chat_template`` (a built-in name or Jinja) and require one: a tokenizer without a template is
    an error naming ``chat_template`` (:mod:`bfpo.data.templates`), since one template must serve SFT, BFPO,
    red teaming and evaluation. A missing pad token becomes the EOS token."""
    from bfpo.data.templates import apply_chat_template_setting

    apply_chat_template_setting(tokenizer, chat_template, name, key="chat_template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: Any):
    """``AutoModelForCausalLM`` of :class:`~bfpo.train.config.ModelArguments` ``spec``: safetensors weights,
    remote code off unless ``trust_remote_code``, LoRA adapters when ``use_peft``."""
    from transformers import AutoModelForCausalLM

    args = model_arguments(spec)
    kw: Dict[str, Any] = {
        "trust_remote_code": args.trust_remote_code,
        "revision": args.model_revision,
        "dtype": resolve_dtype(args.dtype),
    }
    if args.attn_implementation:
        kw["attn_implementation"] = args.attn_implementation
    if args.gguf_file:
        kw["gguf_file"] = args.gguf_file
    else:
        kw["use_safetensors"] = True
    model = from_pretrained_or_user_error(AutoModelForCausalLM, args.model_name_or_path, "model_name_or_path", **kw)
    if args.use_peft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=args.lora_r,
                lora_alpha=args.lora_alpha,
                lora_dropout=args.lora_dropout,
                target_modules=args.lora_target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model


#: written into an output folder when a run claims it; a folder with files but without it is not ours
RUN_MARKER = ".bfpo-run.json"
#: the files that make a folder a loadable model: moved in last, so their presence means "finished"
FINISH_FILES = ("adapter_config.json", "config.json")


def check_output_dir(output_dir: str | Path, resume: bool, overwrite: bool = False) -> None:
    """Claim ``output_dir`` for a run (writes :data:`RUN_MARKER`), or refuse with
    :class:`~bfpo.errors.OutputExistsError`:

    * a finished model (``config.json``/``adapter_config.json``) is never overwritten;
    * a folder holding files that are not a bfpo run (no marker, no checkpoints) needs ``overwrite``;
    * checkpoints of an earlier run need ``resume`` (a run killed before its first checkpoint may restart:
      its metrics.jsonl is cut back when training begins).
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output_dir {out} is a file; expected a folder (new or empty)")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if any((out / name).exists() for name in FINISH_FILES):
            raise OutputExistsError(
                f"{out} already holds a trained model; choose another output_dir "
                "(bfpo never overwrites a finished model)"
            )
        has_checkpoints = any(name.startswith("checkpoint-") for name in entries)
        is_run = (out / RUN_MARKER).exists() or has_checkpoints
        if entries and not is_run and not overwrite:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise OutputExistsError(
                f"output_dir {out} holds files bfpo did not write ({shown}); choose a new "
                "or empty folder, or pass --overwrite to write into it"
            )
        if has_checkpoints and not resume:
            raise OutputExistsError(
                f"{out} holds checkpoints of an earlier run; pass --resume to continue it or choose another output_dir"
            )
    _write_marker(out)


def _write_marker(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{RUN_MARKER}.tmp{os.getpid()}"
    tmp.write_text(json.dumps({"written_by": "bfpo", "note": "this folder is a bfpo run"}) + "\n")
    os.replace(tmp, out / RUN_MARKER)


def nonfinite_parameters(model) -> List[str]:
    """Names of the parameters holding a NaN or an infinity (empty when all are finite)."""
    with torch.no_grad():
        return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def save_final(
    trainer, output_dir: str | Path, card: Optional[str], extra_files: Optional[Dict[str, str]] = None
) -> Path:
    """Save the model (safetensors) + tokenizer + model card (``card``; none when None) + ``extra_files``
    (name -> text) atomically.

    Everything is written complete in ``.final-staging``; then the files are moved in with
    :data:`FINISH_FILES` last, so the folder counts as (and loads as) a finished model only once all of it
    is there. A kill before that last rename leaves an unfinished run that ``--resume`` completes. Weights
    that are not finite are never written (:class:`~bfpo.errors.TrainingDivergedError`).
    """
    out = Path(output_dir)
    bad = nonfinite_parameters(trainer.accelerator.unwrap_model(trainer.model))
    if bad:
        raise TrainingDivergedError(
            f"{out}: the trained weights are not finite ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); no model was saved. Lower "
            "learning_rate or raise tau."
        )
    staging = out / ".final-staging"
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        if card is not None:
            (staging / "README.md").write_text(card)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        publish_staged(staging, out)
    return out


def publish_staged(staging: Path, out: Path) -> None:
    """Move every item of ``staging`` into ``out``, :data:`FINISH_FILES` last, then drop ``staging``."""
    items = sorted(staging.iterdir(), key=lambda p: (p.name in FINISH_FILES, p.name))
    for item in items:
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(staging, ignore_errors=True)


def model_card(
    title: str, base_model: str, settings: Dict[str, Any], metrics: Dict[str, Any], data: Dict[str, Any]
) -> str:
    """A Hugging Face model card (YAML front matter + tables) describing how the model was trained."""
    lines = [
        "---",
        "library_name: transformers",
        "tags: [bfpo, alignment, safety, preference-optimization]",
        f"base_model: {base_model}",
        "---",
        "",
        f"# {title}",
        "",
        f"Trained with [bfpo](https://arxiv.org/abs/2408.15313) from `{base_model}`.",
        "",
        "## Settings",
        "",
        "| key | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | `{json.dumps(v, default=str)}` |" for k, v in settings.items()]
    lines += ["", "## Data", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(v, default=str)}` |" for k, v in data.items()]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def closing_process_group():
    """Around a command's whole run: end a ``torchrun`` run cleanly. On success every rank waits for the
    others, then the process group is destroyed; on an error it is destroyed without waiting, so a failed
    rank cannot leave the others blocked. Without this a gloo rank can abort at interpreter exit
    ("terminate called without an active exception") after the model was saved, and the launcher reports
    the whole run as failed. A no-op in a single process."""
    import torch.distributed as dist

    def started() -> bool:
        return dist.is_available() and dist.is_initialized()

    try:
        yield
    except BaseException:
        if started():
            dist.destroy_process_group()
        raise
    if started():
        dist.barrier()
        dist.destroy_process_group()
