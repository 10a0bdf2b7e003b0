"""Tiny models and tokenizers for tests.

The builders that production also uses (the world's policy, ``demo --quick``) live in
:mod:`bfpo.models.tiny` and are re-exported here; :func:`tiny_mistral` is for tests only.
"""

from __future__ import annotations

from bfpo.models.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, save_tiny_model, tiny_llama, tiny_tokenizer

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "save_tiny_model", "tiny_llama", "tiny_mistral", "tiny_tokenizer"]


def tiny_mistral(
    tokenizer,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    seed: int = 0,
):
    """A randomly initialised ``MistralForCausalLM`` (the family of Mistral-7B and zephyr-7b-beta)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        sliding_window=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return MistralForCausalLM(cfg)


if __name__ == "__main__":  # python -m bfpo.testing DIR: write a tiny model for the tiny recipes
    import sys

    print(save_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny-model"))
