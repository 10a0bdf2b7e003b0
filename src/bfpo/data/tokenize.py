"""Tokenize preference pairs into the ids the BFPO trainer consumes.

Each example is ``{"prompt_ids", "chosen_ids", "rejected_ids", "safe_chosen", "safe_rejected",
"is_safety"}``: the policy's log-probabilities pi(y|x) of Eq. 15 are summed over ``chosen_ids`` /
``rejected_ids`` given ``prompt_ids``, and the two labels feed g_I (Eq. 14).

Rules, kept simple on purpose:

* The prompt is rendered by :func:`format_prompt` (the tokenizer's chat template with the generation
  prompt, or plain text plus a newline) and encoded with ``add_special_tokens=False``. A BOS id is
  prepended only when the tokenizer has one, adds it by default (its ``tokenizer("a")`` starts with
  BOS), and the rendered text does not already start with the BOS token.
* A response is ``tokenizer(response, add_special_tokens=False)`` plus the EOS id.
* The prompt is truncated from the LEFT (keeping the prepended BOS) to ``max_prompt_length``
  (default ``max_length // 2``); responses are then truncated from the RIGHT so that
  ``len(prompt) + len(response) <= max_length``. A prompt that leaves fewer than
  :data:`MIN_RESPONSE_TOKENS` tokens is an error rather than a pair of nearly empty responses.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from bfpo.data.records import DataValidationError, PairRecord, Prompt

MIN_RESPONSE_TOKENS = 8
ON_ERROR = ("raise", "drop")


def _messages(prompt: Prompt, system_prompt: Optional[str]) -> List[Dict[str, str]]:
    msgs = (
        [{"role": "user", "content": prompt}]
        if isinstance(prompt, str)
        else [{"role": m["role"], "content": m["content"]} for m in prompt]
    )
    if system_prompt and not (msgs and msgs[0]["role"] == "system"):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def format_prompt(prompt: Prompt, tokenizer: Any, system_prompt: Optional[str] = None) -> str:
    """The prompt as the text the model continues with its response.

    With a chat template: ``apply_chat_template(messages, add_generation_prompt=True)`` (a text prompt
    becomes one user message; ``system_prompt`` is prepended unless the messages start with a system
    turn). Without one: the system prompt and the turns as plain text (single user turn: its content;
    several turns: ``"Role: content"`` lines), ending with a newline.
    """
    msgs = _messages(prompt, system_prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if len(msgs) == 1 or (len(msgs) == 2 and msgs[0]["role"] == "system"):
        lines = [m["content"] for m in msgs]
    else:
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in msgs]
    return "\n".join(lines) + "\n"


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def _encode(tokenizer: Any, text: str) -> List[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _tokenize(
    rec: PairRecord,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: Optional[int],
    where: str,
    is_safety: Optional[bool],
    adds_bos: bool,
) -> Tuple[Dict[str, Any], bool, bool]:
    """(example, prompt truncated?, a response truncated?)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; responses must end with EOS")
    limit = max_prompt_length if max_prompt_length is not None else max_length // 2
    text = format_prompt(rec.prompt, tokenizer)
    bos_token = getattr(tokenizer, "bos_token", None)
    head = [tokenizer.bos_token_id] if adds_bos and not (bos_token and text.startswith(bos_token)) else []
    body = _encode(tokenizer, text)
    full_prompt = len(head) + len(body)
    keep = max(limit - len(head), 0)
    prompt_ids = head + (body[len(body) - keep :] if keep else [])
    room = max_length - len(prompt_ids)
    if room < MIN_RESPONSE_TOKENS:
        raise DataValidationError(
            f"{where}: field 'prompt' leaves {room} token(s) for the response (prompt {len(prompt_ids)} "
            f"tokens after truncation, {full_prompt} before; max_length {max_length}, max_prompt_length "
            f"{limit}); need at least {MIN_RESPONSE_TOKENS}"
        )
    responses = {}
    cut = False
    for name in ("chosen", "rejected"):
        ids = _encode(tokenizer, getattr(rec, name)) + [eos]
        cut = cut or len(ids) > room
        responses[name] = ids[:room]
    example = {
        "prompt_ids": prompt_ids,
        "chosen_ids": responses["chosen"],
        "rejected_ids": responses["rejected"],
        "safe_chosen": float(rec.safe_chosen),
        "safe_rejected": float(rec.safe_rejected),
        "is_safety": int(rec.kind == "safety" if is_safety is None else bool(is_safety)),
    }
    return example, len(prompt_ids) < full_prompt, cut


def tokenize_pair(
    rec: PairRecord,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: Optional[int] = None,
    where: str = "record",
    is_safety: Optional[bool] = None,
) -> Dict[str, Any]:
    """Token ids and labels of one pair (see the module docstring for the BOS/EOS/truncation rules).

    Raises :class:`DataValidationError` naming ``where`` and field 'prompt' when the (truncated) prompt
    leaves fewer than 8 tokens for the response. ``is_safety`` defaults to ``rec.kind == "safety"``.
    """
    return _tokenize(rec, tokenizer, max_length, max_prompt_length, where, is_safety, _adds_bos(tokenizer))[0]


def tokenize_pairs(
    records: Sequence[PairRecord],
    tokenizer: Any,
    max_length: int,
    max_prompt_length: Optional[int] = None,
    on_error: str = "raise",
    desc: str = "tokenizing",
) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """Tokenize many pairs with a progress bar.

    Errors name ``metadata['origin']`` (``"<file> row <i>"`` from the loader) or ``"record <i>"``.
    ``on_error="drop"`` skips pairs that cannot fit. Returns ``(examples, stats)`` with stats
    ``{"n": kept, "dropped": .., "truncated_prompt": .., "truncated_response": ..}`` (the last counts
    examples where at least one response was cut).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"unknown on_error {on_error!r}; valid values: {', '.join(ON_ERROR)}")
    adds_bos = _adds_bos(tokenizer)
    examples: List[Dict[str, Any]] = []
    stats = {"n": 0, "dropped": 0, "truncated_prompt": 0, "truncated_response": 0}
    for i, rec in enumerate(tqdm(records, desc=desc, disable=len(records) < 100)):
        where = str(rec.metadata.get("origin", f"record {i}"))
        try:
            ex, cut_prompt, cut_response = _tokenize(
                rec, tokenizer, max_length, max_prompt_length, where, None, adds_bos
            )
        except DataValidationError:
            if on_error == "raise":
                raise
            stats["dropped"] += 1
            continue
        examples.append(ex)
        stats["truncated_prompt"] += int(cut_prompt)
        stats["truncated_response"] += int(cut_response)
    stats["n"] = len(examples)
    return examples, stats
