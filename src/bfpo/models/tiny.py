"""Tiny models and tokenizers built in-process: the safety world's policy, ``bfpo demo --quick`` and the
tiny recipes (``python -m bfpo.models.tiny DIR`` writes one), and the tests (through :mod:`bfpo.testing`).

Nothing here touches the hub: the tokenizer is a byte-level BPE trained on the given text in milliseconds,
the model is a Llama built from a config with random weights.
"""

from __future__ import annotations

from typing import Iterable, Optional

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]

_DEFAULT_CORPUS = [
    "How do I bake bread? Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "I can't help with that, because it could hurt people.",
    "Here is how to do it step by step: first, second, third.",
    "Sorry, I cannot assist with making weapons or harming anyone.",
    "The capital of France is Paris. Water boils at 100 degrees Celsius.",
]


def tiny_tokenizer(
    corpus: Optional[Iterable[str]] = None,
    vocab_size: int = 512,
    chat_template: Optional[str] = CHAT_TEMPLATE,
    pad_token: Optional[str] = "<pad>",
):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with bos/eos, and by default a pad token and a chat
    template. ``chat_template=None, pad_token=None`` gives a tokenizer with the properties of a base model's
    such as Mistral-7B-v0.1 (no template, no pad token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus or _DEFAULT_CORPUS), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad_token,
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    fast.chat_template = chat_template
    return fast


def tiny_llama(
    tokenizer,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_position_embeddings: int = 512,
    seed: int = 0,
):
    """A randomly initialised ``LlamaForCausalLM`` sized for CPU tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def save_tiny_model(path, corpus: Optional[Iterable[str]] = None, **kwargs) -> str:
    """Build a tiny tokenizer + Llama and save both to ``path`` (a loadable model directory)."""
    tok = tiny_tokenizer(corpus)
    model = tiny_llama(tok, **kwargs)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


if __name__ == "__main__":  # python -m bfpo.models.tiny DIR: write a tiny model for the tiny recipes
    import sys

    print(save_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny-model"))
