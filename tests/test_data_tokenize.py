"""Prompt formatting and pair tokenization with the in-process tiny tokenizer."""

from __future__ import annotations

import pytest
from tokenizers import processors

from bfpo.data.records import DataValidationError, PairRecord
from bfpo.data.tokenize import MIN_RESPONSE_TOKENS, format_prompt, tokenize_pair, tokenize_pairs
from bfpo.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def bos_tokenizer():
    """A tiny tokenizer whose post-processor adds BOS by default (like Llama's)."""
    t = tiny_tokenizer()
    t._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return t


def enc(t, text):
    return t(text, add_special_tokens=False)["input_ids"]


def test_format_prompt_chat_template(tok):
    assert format_prompt("hi", tok) == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert (
        format_prompt("hi", tok, system_prompt="be safe")
        == "<|system|>\nbe safe<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"
    )
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert format_prompt(msgs, tok) == (
        "<|user|>\na<|end|>\n<|assistant|>\nb<|end|>\n<|user|>\nc<|end|>\n<|assistant|>\n"
    )


def test_format_prompt_plain_text():
    t = tiny_tokenizer()
    t.chat_template = None
    assert format_prompt("How are you?", t) == "How are you?\n"
    assert format_prompt("q", t, system_prompt="sys") == "sys\nq\n"
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert format_prompt(msgs, t) == "User: a\nAssistant: b\nUser: c\n"


def test_tokenize_pair_ids_and_labels(tok):
    rec = PairRecord("How do I bake bread?", "Mix flour and water.", "I can't help with that.", 1.0, 0.0, kind="safety")
    ex = tokenize_pair(rec, tok, max_length=256)
    assert ex["prompt_ids"] == enc(tok, format_prompt(rec.prompt, tok))  # no BOS: tokenizer doesn't add one
    assert ex["chosen_ids"] == enc(tok, "Mix flour and water.") + [tok.eos_token_id]
    assert ex["rejected_ids"] == enc(tok, "I can't help with that.") + [tok.eos_token_id]
    assert (ex["safe_chosen"], ex["safe_rejected"], ex["is_safety"]) == (1.0, 0.0, 1)
    assert tokenize_pair(rec, tok, 256, is_safety=False)["is_safety"] == 0
    helpful = PairRecord("q", "a long answer", "b", kind="helpful")
    assert tokenize_pair(helpful, tok, 256)["is_safety"] == 0


def test_bos_added_when_tokenizer_adds_it_by_default():
    t = bos_tokenizer()
    rec = PairRecord("How do I bake bread?", "Mix flour.", "No.")
    ex = tokenize_pair(rec, t, 256)
    assert ex["prompt_ids"][0] == t.bos_token_id and ex["prompt_ids"][1:] == enc(t, format_prompt(rec.prompt, t))
    assert t.bos_token_id not in ex["chosen_ids"]
    # a template that already starts with BOS does not get a second one
    t.chat_template = "<s>" + t.chat_template
    ex = tokenize_pair(rec, t, 256)
    assert ex["prompt_ids"].count(t.bos_token_id) == 1 and ex["prompt_ids"][0] == t.bos_token_id


def test_prompt_truncated_from_left_keeping_bos():
    t = bos_tokenizer()
    long_prompt = " ".join(f"word{i}" for i in range(60))
    rec = PairRecord(long_prompt, "Mix flour.", "No.")
    full = enc(t, format_prompt(long_prompt, t))
    ex = tokenize_pair(rec, t, max_length=64, max_prompt_length=20)
    assert len(ex["prompt_ids"]) == 20
    assert ex["prompt_ids"] == [t.bos_token_id] + full[-19:]
    ex = tokenize_pair(rec, t, max_length=64)  # default max_prompt_length = max_length // 2
    assert len(ex["prompt_ids"]) == 32 and ex["prompt_ids"][-5:] == full[-5:]


def test_responses_truncated_from_right(tok):
    long = " ".join(f"step{i}" for i in range(80))
    rec = PairRecord("q", long, "short no", 1.0, 1.0)
    ex = tokenize_pair(rec, tok, max_length=48, max_prompt_length=16)
    room = 48 - len(ex["prompt_ids"])
    assert len(ex["chosen_ids"]) == room and ex["chosen_ids"] == enc(tok, long)[:room]
    assert ex["rejected_ids"][-1] == tok.eos_token_id  # short response untouched
    assert len(ex["prompt_ids"]) + max(len(ex["chosen_ids"]), len(ex["rejected_ids"])) <= 48


def test_no_room_error_names_where_and_counts(tok):
    rec = PairRecord(" ".join(f"w{i}" for i in range(40)), "a b", "c d")
    with pytest.raises(
        DataValidationError,
        match=r"pku\.jsonl row 3: field 'prompt' leaves 4 token\(s\) for the response "
        r"\(prompt 28 tokens after truncation",
    ):
        tokenize_pair(rec, tok, max_length=32, max_prompt_length=28, where="pku.jsonl row 3")
    assert MIN_RESPONSE_TOKENS == 8
    ok = tokenize_pair(rec, tok, max_length=32, max_prompt_length=24)
    assert len(ok["prompt_ids"]) == 24


def test_tokenize_pairs_stats_and_drop(tok):
    long_prompt = " ".join(f"w{i}" for i in range(40))
    recs = [
        PairRecord("q1", "fine answer", "other answer"),
        PairRecord(long_prompt, "x", "y", metadata={"origin": "data.jsonl row 1"}),
        PairRecord("q2", " ".join(f"s{i}" for i in range(60)), "ok"),
    ]
    with pytest.raises(DataValidationError, match=r"data\.jsonl row 1: field 'prompt'"):
        tokenize_pairs(recs, tok, max_length=32, max_prompt_length=30)
    examples, stats = tokenize_pairs(recs, tok, max_length=32, max_prompt_length=30, on_error="drop")
    assert stats == {"n": 2, "dropped": 1, "truncated_prompt": 0, "truncated_response": 1}
    assert len(examples) == 2 and all(len(e["prompt_ids"]) + len(e["chosen_ids"]) <= 32 for e in examples)
    examples, stats = tokenize_pairs(recs, tok, max_length=32)
    assert stats == {"n": 3, "dropped": 0, "truncated_prompt": 1, "truncated_response": 1}
    with pytest.raises(ValueError, match="on_error"):
        tokenize_pairs(recs, tok, 32, on_error="skip")
