"""Loading models for training and writing the trained model directory (weights, tokenizer, card)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(name: Optional[str]):
    if name in (None, "auto"):
        return "auto" if name == "auto" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


def load_tokenizer(spec: Dict[str, Any]):
    from transformers import AutoTokenizer

    name = spec.get("tokenizer") or spec["name_or_path"]
    kw = {"trust_remote_code": bool(spec.get("trust_remote_code", False)), "revision": spec.get("revision")}
    if spec.get("gguf_file") and not spec.get("tokenizer"):
        kw["gguf_file"] = spec["gguf_file"]
    tok = AutoTokenizer.from_pretrained(name, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: Dict[str, Any]):
    """``AutoModelForCausalLM`` from a recipe's ``model`` section: safetensors weights, remote code off
    unless ``trust_remote_code: true``, optional LoRA (``lora: {r, lora_alpha, target_modules}``)."""
    from transformers import AutoModelForCausalLM

    kw: Dict[str, Any] = {"trust_remote_code": bool(spec.get("trust_remote_code", False)),
                          "revision": spec.get("revision"), "dtype": resolve_dtype(spec.get("dtype"))}
    if spec.get("attn_implementation"):
        kw["attn_implementation"] = spec["attn_implementation"]
    if spec.get("gguf_file"):
        kw["gguf_file"] = spec["gguf_file"]
    else:
        kw["use_safetensors"] = True
    model = AutoModelForCausalLM.from_pretrained(spec["name_or_path"], **kw)
    if spec.get("lora"):
        from peft import LoraConfig, get_peft_model

        lora = {"task_type": "CAUSAL_LM", **spec["lora"]}
        model = get_peft_model(model, LoraConfig(**lora))
    return model


def check_output_dir(output_dir: str | Path, resume: bool) -> None:
    """Refuse to overwrite a finished model, or to restart over checkpoints without ``--resume``."""
    out = Path(output_dir)
    if not out.exists():
        return
    if (out / "config.json").exists() or (out / "adapter_config.json").exists():
        raise FileExistsError(f"{out} already holds a trained model; choose another output_dir "
                              "(bfpo never overwrites a finished model)")
    if any(p.name.startswith("checkpoint-") for p in out.iterdir()) and not resume:
        raise FileExistsError(f"{out} holds checkpoints of an earlier run; pass --resume to continue it or "
                              "choose another output_dir")


def save_final(trainer, output_dir: str | Path, card: str) -> Path:
    """Save the model (safetensors) + tokenizer + model card, staged in a temporary folder and moved in."""
    out = Path(output_dir)
    staging = out / ".final-staging"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        (staging / "README.md").write_text(card)
        for item in staging.iterdir():
            os.replace(item, out / item.name)
        shutil.rmtree(staging, ignore_errors=True)
    return out


def model_card(title: str, base_model: str, settings: Dict[str, Any], metrics: Dict[str, Any],
               data: Dict[str, Any]) -> str:
    """A Hugging Face model card (YAML front matter + tables) describing how the model was trained."""
    lines = ["---", "library_name: transformers", "tags: [bfpo, alignment, safety, preference-optimization]",
             f"base_model: {base_model}", "---", "", f"# {title}", "",
             f"Trained with [bfpo](https://arxiv.org/abs/2408.15313) from `{base_model}`.", "",
             "## Settings", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(v, default=str)}` |" for k, v in settings.items()]
    lines += ["", "## Data", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(v, default=str)}` |" for k, v in data.items()]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"
