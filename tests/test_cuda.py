"""What differs on a GPU (issue 15): skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them on one.

* the fused (tiled) LM head equals the full-logits computation on CUDA, in values and gradients, and
  matches the CPU result; under bf16 autocast it stays close to the full-logits computation;
* a model whose weights are bf16, trained WITHOUT autocast (``bf16=False``), scores pairs close to the
  float32 computation of the same weights, back-propagates bf16 gradients, and trains with BFPOTrainer;
* packed (padding-free) batches equal padded ones on CUDA, for sdpa and for flash-attention 2 where installed;
* the training-step benchmark reports peak CUDA memory.

``BFPO_CUDA_TEST_DEVICE=cpu`` runs the same checks on CPU (to check the tests themselves without a GPU;
the benchmark test needs a real GPU and stays skipped).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bfpo.train.collator import PairCollator, model_inputs
from bfpo.train.logps import _module_token_logps, _token_logps, add_response_logps_forward
from oracles import random_pairs

DEVICE = os.environ.get("BFPO_CUDA_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")
pytestmark = pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs CUDA")
ROOT = Path(__file__).resolve().parents[1]


def _model(attn="sdpa", seed=0, vocab=300):
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attn,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _to(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _full_logps(model, batch):
    """Summed response log-probs from full float32 logits (the plain computation)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (lp * batch["response_mask"][:, 1:]).sum(-1)


@pytest.mark.parametrize("scale,softcap", [(1.0, None), (0.5, 3.0)])
def test_fused_lm_head_equals_full_logits_on_cuda(scale, softcap):
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 500, bias=False).to(DEVICE)
    hidden = torch.randn(70, 32, device=DEVICE, requires_grad=True)
    targets = torch.randint(0, 500, (70,), device=DEVICE)
    weights = torch.randn(70, device=DEVICE)
    fused = _token_logps(hidden, targets, head, scale, softcap, chunk_size=16)  # 5 tiles, the last one short
    (fused * weights).sum().backward()
    g_h, g_w = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    full = _module_token_logps(hidden, targets, head, scale, softcap)
    (full * weights).sum().backward()
    assert fused.device.type == DEVICE.split(":")[0] and fused.dtype == torch.float32
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_h, hidden.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_w, head.weight.grad, rtol=1e-4, atol=1e-5)
    # and the device computes what the CPU computes
    cpu = _token_logps(hidden.detach().cpu(), targets.cpu(), head.cpu(), scale, softcap, chunk_size=16)
    torch.testing.assert_close(fused.detach().cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_fused_lm_head_under_bf16_autocast_on_cuda():
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 1000, bias=False).to(DEVICE)
    hidden = torch.randn(50, 64, device=DEVICE, requires_grad=True)
    targets = torch.randint(0, 1000, (50,), device=DEVICE)
    with torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16):
        fused = _token_logps(hidden, targets, head, 1.0, None, chunk_size=16)
        full = _module_token_logps(hidden, targets, head, 1.0, None)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, full, rtol=2e-2, atol=5e-2)
    fused.sum().backward()
    assert hidden.grad.dtype == torch.float32 and torch.isfinite(hidden.grad).all()
    assert head.weight.grad.dtype == torch.float32 and torch.isfinite(head.weight.grad).all()


def test_bf16_weights_without_autocast_on_cuda():
    model = _model().to(DEVICE)
    bf16 = _model().to(torch.bfloat16).to(DEVICE)
    with torch.no_grad():  # the float32 model holds exactly the bf16 weights, upcast
        for p32, p16 in zip(model.parameters(), bf16.parameters()):
            p32.copy_(p16.float())
    add_response_logps_forward(bf16, chunk_size=16)
    feats = random_pairs(seed=1)
    padded = _to(PairCollator(0)(feats), DEVICE)
    packed = _to(PairCollator(0, padding_free=True)(feats), DEVICE)
    assert not torch.is_autocast_enabled(DEVICE.split(":")[0])
    out = bf16(**model_inputs(packed))
    with torch.no_grad():
        ref = _full_logps(model, padded)
    assert out.logps.dtype == torch.float32
    # bf16 activations: about 3 significant digits per token, summed over up to ~20 tokens
    torch.testing.assert_close(out.logps.detach(), ref, rtol=2e-2, atol=0.5)
    out.logps.sum().backward()
    ref_model = model
    _full_logps(ref_model, padded).sum().backward()
    for (name, p16), p32 in zip(bf16.named_parameters(), ref_model.parameters()):
        assert p16.grad is not None and p16.grad.dtype == torch.bfloat16, name
        assert torch.isfinite(p16.grad).all(), name
        if "down_proj" in name:
            cos = torch.nn.functional.cosine_similarity(p16.grad.float().flatten(), p32.grad.flatten(), dim=0)
            assert cos > 0.98, (name, float(cos))


def test_trainer_bf16_weights_without_autocast_on_cuda(tmp_path):
    from bfpo.testing import tiny_tokenizer
    from bfpo.train import BFPOConfig, BFPOTrainer

    model = _model().to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "down_proj" in n}
    args = BFPOConfig(
        output_dir=str(tmp_path / "out"),
        trainable=["down_proj"],
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        use_cpu=not ON_CUDA,
        padding_free=True,
        seed=0,
        ref_cache_dir=str(tmp_path / "ref"),
        report_to="none",
    )
    trainer = BFPOTrainer(model, args, train_dataset=random_pairs(seed=1), processing_class=tiny_tokenizer())
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16 and p.device.type == DEVICE.split(":")[0], n
    assert all(not torch.equal(p.detach().cpu(), before[n].cpu()) for n, p in model.named_parameters() if n in before)


@pytest.mark.parametrize("attn", ["sdpa", "flash_attention_2"])
def test_packed_equals_padded_on_cuda(attn):
    dtype = torch.float32
    if attn == "flash_attention_2":
        if not ON_CUDA or importlib.util.find_spec("flash_attn") is None:
            pytest.skip("flash-attn is not installed (or no CUDA)")
        dtype = torch.bfloat16  # flash-attention runs in half precision only
    model = _model(attn).to(dtype).to(DEVICE)
    add_response_logps_forward(model, chunk_size=16)
    feats = random_pairs(3, seed=5)
    with torch.no_grad():
        a = model(**model_inputs(_to(PairCollator(0)(feats), DEVICE))).logps
        b = model(**model_inputs(_to(PairCollator(0, padding_free=True)(feats), DEVICE))).logps
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=0.5)
    torch.testing.assert_close(b, a, **tol)


@pytest.mark.spawns
@pytest.mark.skipif(not ON_CUDA, reason="peak CUDA memory needs a real GPU")
def test_benchmark_reports_peak_cuda_memory(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_step.py"),
            "--quick",
            "--configs",
            "bfpo_down_proj_precomputed",
            "trl_ipo_down_proj",
            "--warmup",
            "1",
            "--steps",
            "1",
            "--output_file",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["machine"]["gpu"]
    for c in res["configs"]:
        assert c["peak_cuda_mb"] is not None and c["peak_cuda_mb"] > 0, c["name"]
        assert math.isfinite(c["tokens_per_s"]) and c["tokens_per_s"] > 0
    assert "peak_cuda" in res["ratios_vs_trl"]["bfpo_down_proj_precomputed"]
