"""The trainer's loss on a batch equals Eq. 15 computed from independently computed log-probs.

The independent side uses nothing of the trainer's: one unpadded sequence at a time through the model's
plain forward, full logits, ``log_softmax``, summed over the response tokens. If the trainer swapped
chosen and rejected, or the two safety labels, or paired an example with another's labels, the numbers
would differ (checked below: each of those swaps moves the expected loss far beyond the tolerance).
"""

import copy

import pytest
import torch

from bfpo.objective import bfpo_loss
from bfpo.testing import tiny_llama, tiny_tokenizer
from bfpo.train import BFPOConfig, BFPOTrainer

# (safe_chosen, safe_rejected): all four Figure-3 cases, each twice, in an order a sort would not keep
LABELS = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (0.0, 0.0), (1.0, 1.0)]


def _examples(tok, seed=0):
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(10, len(tok) - 10, (n,), generator=g).tolist()

    out = []
    for i, (sc, sr) in enumerate(LABELS):
        out.append(
            {
                "prompt_ids": ids(3 + i % 4),
                "chosen_ids": ids(2 + i % 3) + [tok.eos_token_id],
                "rejected_ids": ids(4 + i % 2) + [tok.eos_token_id],
                "safe_chosen": sc,
                "safe_rejected": sr,
                "is_safety": 1,
            }
        )
    return out


@torch.no_grad()
def _sequence_logp(model, prompt_ids, response_ids) -> torch.Tensor:
    """log pi(response | prompt): full logits of one unpadded sequence, log_softmax, summed over the response."""
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(input_ids=ids).logits[0, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
    return token_logps[len(prompt_ids) - 1 :].sum()


def test_trainer_loss_equals_eq15_from_independent_logps(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=3)
    reference = copy.deepcopy(model).eval()
    examples = _examples(tok)
    tau = 0.1
    args = BFPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=1,
        use_cpu=True,
        tau=tau,
        alpha=0.5,
        buffered=False,
        ref_cache_dir=str(tmp_path / "cache"),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = BFPOTrainer(model, args, train_dataset=examples, processing_class=tok)  # reference = model now
    with torch.no_grad():  # move the policy away from the reference so that h != 0
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    model.eval()
    batch = trainer.data_collator(list(trainer.train_dataset))
    with torch.no_grad():
        got = float(trainer.compute_loss(model, batch))

    def logps(m, key):
        return torch.stack([_sequence_logp(m, ex["prompt_ids"], ex[key]) for ex in examples])

    pc, pr = logps(model, "chosen_ids"), logps(model, "rejected_ids")
    rc, rr = logps(reference, "chosen_ids"), logps(reference, "rejected_ids")
    sc = torch.tensor([a for a, _ in LABELS])
    sr = torch.tensor([b for _, b in LABELS])

    def expected(pc, pr, rc, rr, sc, sr):
        return float(bfpo_loss(pc, pr, rc, rr, sc, sr, tau=tau, alpha=0.5).losses.mean())

    want = expected(pc, pr, rc, rr, sc, sr)
    assert got == pytest.approx(want, rel=1e-4)
    # each mistake the comparison must catch gives a clearly different number
    wrong = {
        "chosen/rejected swapped": expected(pr, pc, rr, rc, sc, sr),
        "labels swapped": expected(pc, pr, rc, rr, sr, sc),
        "labels of another pair": expected(pc, pr, rc, rr, sc.roll(1), sr.roll(1)),
    }
    for what, value in wrong.items():
        assert abs(value - want) > 100 * 1e-4 * abs(want), what


def test_reference_cache_is_keyed_by_precision(tmp_path):
    """A cache computed in fp32 is never reused under bf16 autocast (h would not be 0 at step 0)."""
    tok = tiny_tokenizer()
    examples = _examples(tok)
    files = []
    for bf16 in (False, True, False):
        args = BFPOConfig(
            output_dir=str(tmp_path / f"out{bf16}"),
            per_device_train_batch_size=8,
            max_steps=1,
            use_cpu=True,
            bf16=bf16,
            buffered=False,
            ref_cache_dir=str(tmp_path / "cache"),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = BFPOTrainer(tiny_llama(tok, seed=3), args, train_dataset=examples, processing_class=tok)
        files.append(sorted(p.name for p in (tmp_path / "cache").iterdir()))
        ref = torch.tensor([ex["ref_chosen_logps"] for ex in trainer.train_dataset])
        if bf16:
            bf16_ref = ref
        else:
            fp32_ref = ref
    assert len(files[0]) == 1 and len(files[1]) == 2 and files[2] == files[1]  # fp32 reused, bf16 its own
    assert not torch.allclose(bf16_ref, fp32_ref, atol=1e-4)  # the two precisions really differ


@pytest.mark.parametrize("disable", [True, False])
def test_dropout_is_off_so_h_is_zero_at_step_zero(tmp_path, disable):
    """With attention dropout in the model, the first training-mode loss equals mean((g_I / tau)^2) only
    when the trainer switches dropout off (``disable_dropout``, on by default as in TRL's DPOConfig)."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=3)
    for module in model.modules():  # Llama-style attention passes this rate to SDPA in training mode
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    examples = _examples(tok)
    tau = 0.1
    args = BFPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=1,
        use_cpu=True,
        tau=tau,
        buffered=False,
        ref_cache_dir=str(tmp_path / "cache"),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        disable_dropout=disable,
    )
    trainer = BFPOTrainer(model, args, train_dataset=examples, processing_class=tok)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        got = float(trainer.compute_loss(model, trainer.data_collator(list(trainer.train_dataset))))
    g = torch.tensor([1.5 * a - 0.5 * b - 0.5 for a, b in LABELS])  # Eq. 14, alpha = 0.5
    at_zero = float(((g / tau) ** 2).mean())
    assert (got == pytest.approx(at_zero, rel=1e-5)) is disable


def test_trl_format_dataset_trains_with_two_label_columns(tmp_path):
    """A TRL DPOTrainer user's dataset (conversational and text rows) trains after adding two columns, and
    the trainer tokenises it exactly as the data layer does."""
    from datasets import Dataset

    from bfpo.data.adapters import records_from_trl_dataset
    from bfpo.data.tokenize import tokenize_pairs

    tok = tiny_tokenizer()
    rows = [
        {
            "prompt": [{"role": "user", "content": f"How do I pick lock {i}?" if i % 2 else f"Bake bread {i}?"}],
            "chosen": [{"role": "assistant", "content": "Step one, step two." if i % 2 else "Mix, then bake."}],
            "rejected": [{"role": "assistant", "content": "I can't help with that." if i % 2 else "No."}],
        }
        for i in range(8)
    ]
    text = records_from_trl_dataset(
        [
            {
                "prompt": "Bake bread?",
                "chosen": "Mix, then bake.",
                "rejected": "No.",
                "safe_chosen": True,
                "safe_rejected": True,
            }
        ]
    )
    assert (text[0].prompt, text[0].chosen, text[0].kind) == ("Bake bread?", "Mix, then bake.", "helpful")
    ds = Dataset.from_list(rows)
    with pytest.raises(ValueError, match="train_dataset row 0.*safe_chosen"):  # a missing label is not "safe"
        BFPOTrainer(
            tiny_llama(tok),
            BFPOConfig(output_dir=str(tmp_path / "x"), use_cpu=True),
            train_dataset=ds,
            processing_class=tok,
        )
    ds = ds.add_column("safe_chosen", [float(i % 2 == 0) for i in range(8)])
    ds = ds.add_column("safe_rejected", [1.0] * 8)
    args = BFPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        use_cpu=True,
        tau=0.1,
        ref_cache_dir=str(tmp_path / "cache"),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        learning_rate=1e-3,
    )
    trainer = BFPOTrainer(tiny_llama(tok), args, train_dataset=ds, processing_class=tok)
    want, _ = tokenize_pairs(
        records_from_trl_dataset(rows_with_labels := list(ds)), tok, args.max_length, args.max_prompt_length
    )
    got = trainer.train_dataset
    assert [(g["prompt_ids"], g["chosen_ids"], g["is_safety"]) for g in got] == [
        (w["prompt_ids"], w["chosen_ids"], w["is_safety"]) for w in want
    ]
    assert [g["is_safety"] for g in got] == [int(r["safe_chosen"] < 1) for r in rows_with_labels]
    trainer.train()
    assert trainer.state.global_step == 2


def test_trainer_safedpo_loss_uses_the_config_margin(tmp_path):
    """``loss: safedpo`` with ``safedpo_delta`` is SafeDPO's Eq. 12 on independently computed log-probs."""
    from bfpo.objective import safedpo_loss

    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=4)
    reference = copy.deepcopy(model).eval()
    examples = _examples(tok)
    args = BFPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=1,
        use_cpu=True,
        tau=0.1,
        loss="safedpo",
        safedpo_delta=2.0,
        buffered=False,
        ref_cache_dir=str(tmp_path / "cache"),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = BFPOTrainer(model, args, train_dataset=examples, processing_class=tok)
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    model.eval()
    with torch.no_grad():
        got = float(trainer.compute_loss(model, trainer.data_collator(list(trainer.train_dataset))))
    pc = torch.stack([_sequence_logp(model, ex["prompt_ids"], ex["chosen_ids"]) for ex in examples])
    pr = torch.stack([_sequence_logp(model, ex["prompt_ids"], ex["rejected_ids"]) for ex in examples])
    rc = torch.stack([_sequence_logp(reference, ex["prompt_ids"], ex["chosen_ids"]) for ex in examples])
    rr = torch.stack([_sequence_logp(reference, ex["prompt_ids"], ex["rejected_ids"]) for ex in examples])
    sc, sr = torch.tensor([a for a, _ in LABELS]), torch.tensor([b for _, b in LABELS])
    want = float(safedpo_loss(pc, pr, rc, rr, sc, sr, tau=0.1, delta=2.0).losses.mean())
    no_margin = float(safedpo_loss(pc, pr, rc, rr, sc, sr, tau=0.1, delta=0.0).losses.mean())
    assert got == pytest.approx(want, rel=1e-4) and abs(want - no_margin) > 1e-3


@pytest.mark.parametrize("fp32_master", [True, False])
def test_bf16_model_keeps_float32_trainable_weights_so_small_updates_land(tmp_path, fp32_master):
    """The paper recipe loads bf16 weights and trains down_proj at lr 5e-7: with float32 master copies of the
    trainable weights (the default) the updates land; in pure bf16 almost all of them round away."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=5).to(torch.bfloat16)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters() if "down_proj" in n}
    args = BFPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=3,
        use_cpu=True,
        bf16=True,
        trainable=["down_proj"],
        learning_rate=5e-7,
        tau=0.1,
        buffered=False,
        ref_cache_dir=str(tmp_path / "cache"),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        fp32_trainable_params=fp32_master,
    )
    BFPOTrainer(model, args, train_dataset=_examples(tok), processing_class=tok).train()
    params = dict(model.named_parameters())
    moved = sum(int((params[n].detach().float() != w).sum()) for n, w in before.items())
    total = sum(w.numel() for w in before.values())
    assert params["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16  # frozen: still bf16
    if fp32_master:
        assert all(params[n].dtype == torch.float32 for n in before) and moved / total > 0.9
    else:
        assert moved / total < 0.1
