"""Benign training prompts drawn from the model itself: sample the *user* turn of its chat template.

An instruct model has seen many user requests in its own fine-tuning data. Rendering the chat template up to
where the user's words begin and sampling from there gives requests in that style: role play, writing tasks,
planning, code, maths, the kinds of prompt MT-Bench-like evaluation sets hold and a few hundred handwritten
questions do not. :func:`sample_user_prompts` keeps only turns the model finished itself (it emitted its end
of turn token within ``max_new_tokens``), of a sensible length, mostly in Latin script, each once.

Nothing here checks that a sampled request is harmless: the caller treats them as benign, and should read a
sample (docs/demo.md says what was read for the demo).
"""

from __future__ import annotations

from typing import Any, List, Optional

from bfpo.models.generate import _autocast

#: placeholder rendered as the user's message to find where the user turn starts in the template
_MARK = "\x00BFPO_USER_TURN\x00"


def user_turn_prefix(tokenizer: Any, system_prompt: Optional[str] = None) -> str:
    """The chat template rendered up to the first character of a user message.

    Raises ValueError when the tokenizer has no chat template (plain-text models have no user turn to
    sample) or the template does not show the user's message verbatim.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("sample_user_prompts needs a tokenizer with a chat template (this one has none)")
    messages = [{"role": "user", "content": _MARK}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if _MARK not in text:
        raise ValueError("the chat template does not render the user's message verbatim; cannot find the user turn")
    return text[: text.index(_MARK)]


def clean_user_prompt(text: str, min_chars: int = 12, max_chars: int = 400) -> Optional[str]:
    """The sampled request, stripped, or None when it is too short, too long, holds template markup or is
    mostly outside the Latin script (the small model drifts into other languages now and then)."""
    text = text.strip()
    if not (min_chars <= len(text) <= max_chars) or "<|" in text or "|>" in text:
        return None
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(c.isascii() for c in letters) / len(letters) < 0.95:
        return None
    return text


def sample_user_prompts(
    model,
    tokenizer,
    n: int,
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 0.95,
    batch_size: int = 32,
    bf16: bool = False,
    system_prompt: Optional[str] = None,
    max_batches: Optional[int] = None,
    progress: bool = True,
) -> List[str]:
    """Up to ``n`` distinct user requests sampled from ``model`` (see the module doc), in the order drawn.

    Batches of ``batch_size`` are drawn until ``n`` requests are kept or ``max_batches`` (default: enough
    for ``n`` at a keep rate of one in four) have been drawn; seeded, so a run is reproducible on one machine.
    """
    import torch
    from tqdm.auto import tqdm

    if n < 1 or batch_size < 1:
        raise ValueError(f"sample_user_prompts: n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    prefix = user_turn_prefix(tokenizer, system_prompt)
    device = next(model.parameters()).device
    enc = tokenizer([prefix] * batch_size, return_tensors="pt", add_special_tokens=False)
    enc = {k: v.to(device) for k, v in enc.items()}
    end = tokenizer.eos_token_id
    if end is None:
        raise ValueError("sample_user_prompts needs a tokenizer with an end-of-turn (eos) token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    limit = max_batches if max_batches is not None else max(1, -(-4 * n // batch_size))
    torch.manual_seed(seed)
    kept: List[str] = []
    seen = set()
    bar = tqdm(total=n, desc="sampling user prompts", disable=not progress)
    for _ in range(limit):
        with torch.no_grad(), _autocast(device.type, bf16):
            seqs = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                pad_token_id=pad,
                eos_token_id=end,
            )
        for row in seqs[:, enc["input_ids"].shape[1] :].tolist():
            if end not in row:  # not finished within max_new_tokens: a cut-off request
                continue
            text = clean_user_prompt(tokenizer.decode(row[: row.index(end)], skip_special_tokens=True))
            if text is None or text.lower() in seen:
                continue
            seen.add(text.lower())
            kept.append(text)
            bar.update(1)
            if len(kept) == n:
                bar.close()
                return kept
    bar.close()
    return kept
