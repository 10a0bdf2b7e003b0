"""Loading a causal LM and generating answers in batches (used by red teaming, evaluation and chat).

The Hugging Face path is the default and always available. The vLLM path (``backend="vllm"``) is used
only when the caller asks for it and ``import vllm`` succeeds; it is never chosen silently.

Prompts are plain strings or chat messages. They are rendered by :func:`bfpo.data.tokenize.format_prompt`
(the tokenizer's chat template with ``add_generation_prompt=True``, else plain text). Templated text
already holds its special tokens; plain text gets the tokenizer's own (e.g. BOS).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from bfpo.args import choices
from bfpo.data.templates import CHAT_TEMPLATE_HELP

Messages = List[Dict[str, str]]
Prompt = Union[str, Messages]


@dataclass
class GenerationArguments:
    """The model that answers and how it generates: the settings ``bfpo evaluate`` and ``bfpo redteam`` share."""

    model_name_or_path: str = field(metadata={"help": "model folder or hub name that answers the prompts (required)"})
    chat_template: Optional[str] = field(default=None, metadata={"help": CHAT_TEMPLATE_HELP})
    system_prompt: Optional[str] = field(default=None, metadata={"help": "a system message before each prompt"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens generated per answer"})
    batch_size: int = field(default=8, metadata={"help": "prompts generated per batch"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast while generating"})
    backend: str = choices(
        "hf", "vllm", default="hf", help="generation backend: transformers, or vLLM (needs the vllm package)"
    )


def format_prompt(prompt: Prompt, tokenizer, system_prompt: Optional[str] = None) -> str:
    """Render a prompt for generation: the shared :func:`bfpo.data.tokenize.format_prompt`."""
    from bfpo.data.tokenize import format_prompt as shared

    return shared(prompt, tokenizer, system_prompt=system_prompt)


def _has_safetensors(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.glob("*.safetensors"))


def load_generation_tokenizer(model_dir_or_name: str, trust_remote_code: bool = False, padding_side: str = "left"):
    """Load a tokenizer for generation, give it a pad token (eos, else unk) and set the padding side."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir_or_name, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
    tok.padding_side = padding_side
    return tok


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16(device: Optional[str] = None) -> bool:
    """True when ``device`` (default: :func:`default_device`) computes bf16 in hardware: a CUDA GPU that
    supports it, or a CPU whose oneDNN build has bf16 kernels (AVX-512 and up). On a CPU without them (AVX2
    only) bf16 autocast is emulated: on a 2-core AVX2 EPYC it made SmolLM2-135M's generation 3x slower than
    float32 (docs/performance.md)."""
    import torch

    kind = (device or default_device()).split(":")[0]
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def machine_info() -> Dict[str, Any]:
    """What a run's numbers depend on beyond its settings: the processor, its kernel level, the GPU, torch.
    bf16 kernels differ between processors, so the same seed can give another model on another machine."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "native_bf16_cpu": native_bf16("cpu"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def load_for_generation(
    model_dir_or_name: str,
    dtype: str = "auto",
    device: Optional[str] = None,
    trust_remote_code: bool = False,
    backend: str = "hf",
    chat_template: Optional[str] = None,
    require_chat_template: bool = False,
) -> Tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for generation, in eval mode on ``device`` (training loads through
    :mod:`bfpo.train.model_io` instead).

    Args:
        model_dir_or_name: a local directory or a hub name.
        dtype: "auto" (the checkpoint's dtype), "float32", "bfloat16" or "float16".
        device: "cpu", "cuda", "cuda:1"...; default: CUDA when available.
        trust_remote_code: off by default; only turn it on for code you have read.
        backend: "hf" (transformers) or "vllm" (returns a ``vllm.LLM`` as the model).
        chat_template: a built-in template name (``zephyr``, ``chatml``) or a Jinja string that replaces the
            tokenizer's (see :mod:`bfpo.data.templates`); use the one the model was trained with.
        require_chat_template: refuse (naming ``--chat_template``) a tokenizer left without a template,
            before any weights load, instead of falling back to plain-text prompts.
    """
    tok = load_generation_tokenizer(model_dir_or_name, trust_remote_code=trust_remote_code)
    if chat_template is not None or require_chat_template:
        from bfpo.data.templates import apply_chat_template_setting

        apply_chat_template_setting(tok, chat_template, model_dir_or_name, key="--chat_template")
    if backend == "vllm":
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(
                "backend='vllm' needs the vllm package (pip install vllm); use backend='hf' otherwise"
            ) from exc
        llm = vllm.LLM(model=model_dir_or_name, dtype=dtype, trust_remote_code=trust_remote_code)
        return llm, tok
    if backend != "hf":
        raise ValueError(f"unknown backend {backend!r}; use 'hf' or 'vllm'")
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype)
    kwargs: Dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if _has_safetensors(model_dir_or_name):  # never fall back to pickled weights when safetensors exist
        kwargs["use_safetensors"] = True
    model = AutoModelForCausalLM.from_pretrained(model_dir_or_name, **kwargs)
    model.to(device or default_device())
    model.eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def load_classifier(model_dir: str, device: Optional[str] = None) -> Tuple[Any, Any]:
    """Load ``(AutoModelForSequenceClassification, tokenizer)`` in eval mode, with a pad token."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    kwargs = {"use_safetensors": True} if _has_safetensors(model_dir) else {}
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.to(device or default_device()).eval()
    return model, tok


def _autocast(device_type: str, bf16: bool):
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def generate_from_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    max_new_tokens: int = 128,
    num_return_sequences: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    bf16: bool = False,
    desc: str = "generating",
    progress: bool = True,
) -> List[List[str]]:
    """Generate continuations of already-formatted texts; one list of ``num_return_sequences`` per text.

    Texts are sorted by length so that each batch pads little, then put back in the input order. Only the
    new tokens are decoded (special tokens skipped, whitespace stripped).
    """
    import torch
    from tqdm.auto import tqdm

    if num_return_sequences > 1 and not do_sample:
        raise ValueError("num_return_sequences > 1 needs do_sample=True (greedy decoding gives one answer)")
    if not texts:
        return []
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: List[List[str]] = [[] for _ in texts]
    torch.manual_seed(seed)
    gen_kwargs: Dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_return_sequences": num_return_sequences,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, total=len(starts)):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx],
            return_tensors="pt",
            padding=True,
            add_special_tokens=not getattr(tokenizer, "chat_template", None),
        )
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad(), _autocast(device.type, bf16):
            seqs = model.generate(**enc, **gen_kwargs)
        new = seqs[:, enc["input_ids"].shape[1] :]
        decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
        for j, i in enumerate(idx):
            out[i] = [d.strip() for d in decoded[j * num_return_sequences : (j + 1) * num_return_sequences]]
    return out


def _generate_vllm(
    llm,
    texts: Sequence[str],
    max_new_tokens: int,
    num_return_sequences: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    seed: int,
) -> List[List[str]]:
    import vllm

    params = vllm.SamplingParams(
        n=num_return_sequences,
        max_tokens=max_new_tokens,
        seed=seed,
        temperature=temperature if do_sample else 0.0,
        top_p=top_p if do_sample else 1.0,
    )
    results = llm.generate(list(texts), params)
    return [[o.text.strip() for o in r.outputs] for r in results]


def generate(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 128,
    num_return_sequences: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    bf16: bool = False,
    system_prompt: Optional[str] = None,
    desc: str = "generating",
    progress: bool = True,
) -> List[List[str]]:
    """Answer each prompt; returns, per prompt, a list of ``num_return_sequences`` responses.

    ``model`` is what :func:`load_for_generation` returned: a transformers model, or a ``vllm.LLM`` when loaded with
    ``backend="vllm"`` (detected from its type). ``bf16`` runs the HF forward passes under bfloat16 autocast
    on CPU or CUDA. ``seed`` seeds torch before the first batch, so a run is reproducible.
    """
    texts = [format_prompt(p, tokenizer, system_prompt=system_prompt) for p in prompts]
    if type(model).__module__.startswith("vllm"):
        return _generate_vllm(model, texts, max_new_tokens, num_return_sequences, do_sample, temperature, top_p, seed)
    return generate_from_texts(
        model,
        tokenizer,
        texts,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        bf16=bf16,
        desc=desc,
        progress=progress,
    )
