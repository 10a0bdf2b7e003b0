"""Self-sampled user prompts (bfpo.models.user_prompts): where the user turn starts, what is kept."""

import pytest
import torch

from bfpo.models.tiny import tiny_tokenizer
from bfpo.models.user_prompts import clean_user_prompt, sample_user_prompts, user_turn_prefix


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_prefix_ends_where_the_user_message_begins(tok):
    prefix = user_turn_prefix(tok)
    full = tok.apply_chat_template([{"role": "user", "content": "How do I boil an egg?"}], tokenize=False)
    assert full.startswith(prefix) and full[len(prefix) :].startswith("How do I boil an egg?")
    with_system = user_turn_prefix(tok, system_prompt="Be brief.")
    assert "Be brief." in with_system and with_system != prefix


def test_no_chat_template_is_an_error(tok):
    plain = tiny_tokenizer(chat_template=None)
    with pytest.raises(ValueError, match="chat template"):
        user_turn_prefix(plain)


@pytest.mark.parametrize(
    "text, kept",
    [
        ("  How do I boil an egg?  ", "How do I boil an egg?"),
        ("Hi", None),  # too short
        ("x" * 401, None),  # too long
        ("Tell me <|im_start|> more", None),  # template markup
        ("Как сварить яйцо вкрутую дома?", None),  # mostly outside the Latin script
        ("Wie koche ich ein Ei? Schön!", "Wie koche ich ein Ei? Schön!"),  # one accent is fine
    ],
)
def test_clean_user_prompt(text, kept):
    assert clean_user_prompt(text) == kept


class ScriptedLM(torch.nn.Module):
    """Answers each generate() call with the next batch of scripted continuations (token ids)."""

    def __init__(self, batches):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.batches = list(batches)
        self.calls = 0

    def generate(self, input_ids, attention_mask=None, max_new_tokens=0, **kw):
        rows = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        width = max(len(r) for r in rows)
        pad = kw["pad_token_id"]
        new = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        return torch.cat([input_ids[: len(rows)], new], dim=1)


def _ids(tok, text, end=True):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ids + [tok.eos_token_id] if end else ids


def test_keeps_finished_distinct_turns_in_order_and_stops_at_n(tok):
    batches = [
        [
            _ids(tok, "How do I boil an egg?"),
            _ids(tok, "Write a poem about the sea and the", end=False),  # cut off: dropped
            _ids(tok, "how do I boil an egg?"),  # the same request again: dropped
        ],
        [_ids(tok, "Plan a trip to Rome for me."), _ids(tok, "Explain photosynthesis simply."), _ids(tok, "Ok")],
    ]
    lm = ScriptedLM(batches)
    out = sample_user_prompts(lm, tok, n=2, batch_size=3, progress=False)
    assert out == ["How do I boil an egg?", "Plan a trip to Rome for me."]
    assert lm.calls == 2  # stopped as soon as n were kept


def test_gives_up_after_max_batches(tok):
    lm = ScriptedLM([[_ids(tok, "never finished", end=False)] * 2])
    assert sample_user_prompts(lm, tok, n=5, batch_size=2, max_batches=3, progress=False) == []
    assert lm.calls == 3


def test_bad_sizes_are_errors(tok):
    with pytest.raises(ValueError, match="n and batch_size"):
        sample_user_prompts(ScriptedLM([[]]), tok, n=0)
