"""Frozen linear weights kept in bf16 (bfpo.train.precision) change no number under bf16 autocast."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bfpo.train.collator import PairCollator, model_inputs
from bfpo.train.layers import select_trainable
from bfpo.train.logps import add_response_logps_forward
from bfpo.train.precision import (
    FrozenLinearWeightsCallback,
    cast_frozen_linear_weights,
    frozen_linear_weights,
    restore_frozen_linear_weights,
)
from oracles import random_pairs


def _model(bf16_exact=True, seed=0):
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation="sdpa",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if bf16_exact:  # as if loaded from a bf16 checkpoint into float32
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    return model


def _logps_and_grads(model, batch):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**model_inputs(batch)).logps
    (out * torch.linspace(-1, 1, out.numel())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


def test_cast_frozen_weights_is_bit_identical_under_autocast():
    model = _model()
    select_trainable(model, ["down_proj"])
    add_response_logps_forward(model, chunk_size=16)
    batch = PairCollator(0, padding_free=True)(random_pairs(seed=3))
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    plain_out, plain_grads = _logps_and_grads(model, batch)
    names = cast_frozen_linear_weights(model)
    # q/k/v/o, gate and up of both layers; not down_proj (trainable), not the tied embedding / LM head
    assert len(names) == 2 * 6 and not any("down_proj" in n or "lm_head" in n for n in names)
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32
    cast_out, cast_grads = _logps_and_grads(model, batch)
    assert torch.equal(cast_out, plain_out)
    assert set(cast_grads) == set(plain_grads) and all("down_proj" in n for n in plain_grads)
    for n in plain_grads:
        assert torch.equal(cast_grads[n], plain_grads[n]), n
    restore_frozen_linear_weights(model, names)
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p.detach(), original[n]), n


def test_weights_bf16_cannot_hold_exactly_are_left_in_float32():
    model = _model(bf16_exact=False)
    select_trainable(model, ["down_proj"])
    assert len(frozen_linear_weights(model)) == 12
    assert cast_frozen_linear_weights(model) == []
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_training_with_the_callback_equals_plain_training(tmp_path):
    from bfpo.testing import tiny_tokenizer
    from bfpo.train import BFPOConfig, BFPOTrainer

    finals, losses = [], []
    for use_callback in (False, True):
        model = _model()
        cb = FrozenLinearWeightsCallback()
        args = BFPOConfig(
            output_dir=str(tmp_path / f"o{use_callback}"),
            trainable=["down_proj"],
            per_device_train_batch_size=4,
            max_steps=3,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            use_cpu=True,
            bf16=True,
            padding_free=True,
            seed=0,
            ref_cache_dir=str(tmp_path / f"r{use_callback}"),
            report_to="none",
        )
        trainer = BFPOTrainer(
            model,
            args,
            train_dataset=random_pairs(seed=3),
            processing_class=tiny_tokenizer(),
            callbacks=[cb] if use_callback else None,
        )
        seen = []
        if use_callback:
            original_step = trainer.training_step

            def spy(*a, _seen=seen, _model=model, _step=original_step, **k):  # the weights are bf16 in training
                _seen.append(_model.model.layers[1].self_attn.q_proj.weight.dtype)
                return _step(*a, **k)

            trainer.training_step = spy
        trainer.train()
        if use_callback:
            assert seen and set(seen) == {torch.bfloat16}
        losses.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert losses[0] == losses[1]
    for n in finals[0]:  # restored after training: same dtype, same values
        assert finals[1][n].dtype == torch.float32 and torch.equal(finals[1][n], finals[0][n]), n
