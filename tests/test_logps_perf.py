"""The fast paths compute the same numbers as the plain ones.

* tiled response log-probs == log_softmax over full logits;
* padding-free (packed) batches == padded batches: log-probs, their gradients, and a whole training run;
* the packed ``sdpa`` path really attends per sequence (and non-packed calls are untouched).
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bfpo.train import logps as logps_mod
from bfpo.train.collator import PairCollator, model_inputs
from bfpo.train.logps import add_response_logps_forward
from oracles import reference_logps_full_logits


def _model(attn="sdpa", layers=2, seed=0):
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attn,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _pairs(n=3, seed=1, prompt=(2, 9), resp=(3, 20)):
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        return torch.randint(3, 300, (k,), generator=g).tolist()

    return [
        dict(
            prompt_ids=ids(*prompt),
            chosen_ids=ids(*resp),
            rejected_ids=ids(*resp),
            safe_chosen=float(i % 2),
            safe_rejected=0.0,
            is_safety=i % 2,
        )
        for i in range(n)
    ]


def test_packed_collator_layout():
    feats = _pairs(2)
    b = PairCollator(0, padding_free=True)(feats)
    seqs = [f["prompt_ids"] + f[s] for s in ("chosen_ids", "rejected_ids") for f in feats]
    lens = [len(s) for s in seqs]
    assert b["input_ids"].shape == (1, sum(lens))  # no padding at all
    assert b["input_ids"][0].tolist() == [t for s in seqs for t in s]
    assert b["cu_seqlens"].tolist() == [0] + torch.tensor(lens).cumsum(0).tolist()
    expected_pos = [p for n in lens for p in range(n)]
    assert b["position_ids"][0].tolist() == expected_pos
    assert b["seq_ids"][0].tolist() == [i for i, n in enumerate(lens) for _ in range(n)]
    resp = [m for f in feats for m in [0] * len(f["prompt_ids"]) + [1] * len(f["chosen_ids"])] + [
        m for f in feats for m in [0] * len(f["prompt_ids"]) + [1] * len(f["rejected_ids"])
    ]
    assert b["response_mask"][0].tolist() == resp
    assert "attention_mask" not in b
    assert set(model_inputs(b)) == {"input_ids", "position_ids", "response_mask", "seq_ids", "cu_seqlens"}


def test_packed_collator_never_scores_across_a_boundary():
    feats = [dict(prompt_ids=[], chosen_ids=[5, 6, 7], rejected_ids=[8, 9], safe_chosen=1.0, safe_rejected=0.0)]
    b = PairCollator(0, padding_free=True)(feats)
    assert b["response_mask"][0].tolist() == [0, 1, 1, 0, 1]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logps_equal_padded_and_full_logits(attn):
    model = _model(attn)
    add_response_logps_forward(model, chunk_size=16)  # several tiles
    feats = _pairs(3)
    padded, packed = PairCollator(0)(feats), PairCollator(0, padding_free=True)(feats)
    with torch.no_grad():
        a = model(**model_inputs(padded))
        b = model(**model_inputs(packed))
        full = reference_logps_full_logits(
            model, padded["input_ids"], padded["attention_mask"], padded["response_mask"]
        )
    torch.testing.assert_close(a.logps, full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.logps, a.logps, rtol=1e-5, atol=1e-4)
    assert (
        b.num_tokens.tolist()
        == a.num_tokens.tolist()
        == [len(f["chosen_ids"]) for f in feats] + [len(f["rejected_ids"]) for f in feats]
    )


def test_packed_gradients_equal_padded():
    feats = _pairs(3, seed=4)
    grads = []
    for padding_free in (False, True):
        model = _model()
        add_response_logps_forward(model, chunk_size=8)
        batch = PairCollator(0, padding_free=padding_free)(feats)
        out = model(**model_inputs(batch)).logps
        (out * torch.linspace(-1, 1, out.numel())).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)


def test_packed_sdpa_attends_per_sequence(monkeypatch):
    model = _model(layers=3)
    add_response_logps_forward(model)
    calls = []
    original = logps_mod._PACKED_STATE["original"]

    def spy(module, q, k, v, mask, *args, **kwargs):
        calls.append((q.shape[2], mask is None, kwargs.get("is_causal")))
        return original(module, q, k, v, mask, *args, **kwargs)

    monkeypatch.setitem(logps_mod._PACKED_STATE, "original", spy)
    feats = _pairs(2)
    batch = PairCollator(0, padding_free=True)(feats)
    with torch.no_grad():
        model(**model_inputs(batch))
    lens = (batch["cu_seqlens"][1:] - batch["cu_seqlens"][:-1]).tolist()
    # one causal call per layer, on the sequences laid out padded, without a mask
    assert calls == [(max(lens), True, True)] * 3
    calls.clear()
    with torch.no_grad():  # a padded call goes to sdpa once per layer, with its padding mask
        model(**model_inputs(PairCollator(0)(feats)))
    assert len(calls) == 3 and all(c[0] == max(lens) for c in calls)


def test_plain_forward_unchanged_by_packed_sdpa():
    model = _model()
    ids = torch.randint(3, 300, (2, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    add_response_logps_forward(model)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_training_padding_free_matches_padded(tmp_path):
    from bfpo.testing import tiny_tokenizer
    from bfpo.train import BFPOConfig, BFPOTrainer

    tok = tiny_tokenizer()
    feats = _pairs(4, seed=7)
    for f in feats:  # ids inside the tiny tokenizer's vocabulary
        for k in ("prompt_ids", "chosen_ids", "rejected_ids"):
            f[k] = [t % 250 + 10 for t in f[k]]
    states, logs = [], []
    for padding_free in (False, True):
        model = _model()
        args = BFPOConfig(
            output_dir=str(tmp_path / f"pf{padding_free}"),
            padding_free=padding_free,
            trainable=["down_proj"],
            per_device_train_batch_size=4,
            max_steps=2,
            learning_rate=1e-2,
            logging_steps=1,
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            seed=0,
            ref_cache_dir=str(tmp_path / f"ref{padding_free}"),
            report_to="none",
        )
        trainer = BFPOTrainer(model, args, train_dataset=feats, processing_class=tok)
        refs = [(ex["ref_chosen_logps"], ex["ref_rejected_logps"]) for ex in trainer.train_dataset]
        trainer.train()
        states.append((refs, {n: p.detach().clone() for n, p in model.named_parameters() if "down_proj" in n}))
        logs.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    (ref_a, w_a), (ref_b, w_b) = states
    torch.testing.assert_close(torch.tensor(ref_b), torch.tensor(ref_a), rtol=1e-5, atol=1e-4)
    assert len(logs[0]) == len(logs[1]) == 2
    torch.testing.assert_close(torch.tensor(logs[1]), torch.tensor(logs[0]), rtol=1e-4, atol=1e-4)
    for name in w_a:
        torch.testing.assert_close(w_b[name], w_a[name], rtol=1e-4, atol=1e-5, msg=name)
    # the updates were real: the weights moved
    assert any(not torch.equal(w_a[n], _model().state_dict()[n]) for n in w_a)


@pytest.mark.parametrize("scale,softcap", [(1.0, None), (0.5, 3.0)])
def test_tiled_lm_head_values_and_gradients_equal_full_logits(scale, softcap):
    from bfpo.train.logps import _module_token_logps, _token_logps

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    weights = torch.randn(37)
    tiled = _token_logps(hidden, targets, head, scale, softcap, chunk_size=8)  # 5 tiles, last one short
    (tiled * weights).sum().backward()
    g_h, g_w = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    full = _module_token_logps(hidden, targets, head, scale, softcap)
    (full * weights).sum().backward()
    torch.testing.assert_close(tiled, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_h, hidden.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_w, head.weight.grad, rtol=1e-5, atol=1e-5)


def test_tiled_lm_head_under_bf16_autocast_close_to_full_logits():
    model = _model()
    add_response_logps_forward(model, chunk_size=16)
    batch = PairCollator(0, padding_free=True)(_pairs(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**model_inputs(batch)).logps
    with torch.no_grad():
        padded = PairCollator(0)(_pairs(3))
        full = reference_logps_full_logits(
            model, padded["input_ids"], padded["attention_mask"], padded["response_mask"]
        )
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.detach(), full, rtol=2e-2, atol=0.5)


def test_non_linear_head_falls_back_to_checkpointed_tiles():
    from bfpo.train.logps import _module_token_logps, _token_logps

    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(8, 20))  # not a bias-free Linear
    hidden = torch.randn(11, 8, requires_grad=True)
    targets = torch.randint(0, 20, (11,))
    tiled = _token_logps(hidden, targets, head, 1.0, None, chunk_size=4)
    torch.testing.assert_close(tiled, _module_token_logps(hidden, targets, head, 1.0, None))
    tiled.sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


def test_partitioned_head_weight_uses_module_forward(monkeypatch):
    from bfpo.train.logps import _module_token_logps, _TiledTokenLogps, _token_logps

    def refuse(*args):
        raise AssertionError("a ZeRO-3 partitioned weight must go through the module's own forward")

    monkeypatch.setattr(_TiledTokenLogps, "apply", refuse)
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 20, bias=False)
    head.weight.ds_id = 7  # what DeepSpeed ZeRO-3 sets on partitioned parameters
    hidden, targets = torch.randn(9, 8), torch.randint(0, 20, (9,))
    torch.testing.assert_close(
        _token_logps(hidden, targets, head, 1.0, None, chunk_size=4),
        _module_token_logps(hidden, targets, head, 1.0, None),
    )
