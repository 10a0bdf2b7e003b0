"""BFPOTrainer's own machinery: atomic checkpoints without patching Trainer, the opt-in batch-composition
record, the metrics' named fields, dropout off in policy and reference; and a torch-free ``import bfpo``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from bfpo.models.tiny import tiny_llama, tiny_tokenizer
from bfpo.train import BFPOConfig, BFPOTrainer
from bfpo.train.trainer import CHECKPOINT_STAGING, BatchCompositionCallback
from oracles import random_pairs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def pairs(n=8, seed=1):
    """``random_pairs`` with half of them safety pairs and all four Figure-3 label cases present."""
    out = random_pairs(n=n, seed=seed, vocab=200)
    for i, ex in enumerate(out):
        ex["is_safety"] = int(i % 2 == 0)
        ex["safe_chosen"], ex["safe_rejected"] = [(1.0, 0.0), (1.0, 1.0), (0.0, 0.0), (0.0, 1.0)][i % 4]
    return out


def config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        tau=0.1,
        ref_cache_dir=str(tmp_path / "cache"),
        disable_tqdm=True,
        report_to="none",
    )
    base.update(kw)
    return BFPOConfig(**base)


class Killed(BaseException):
    """A simulated kill: nothing after it runs."""


class AlsoBaseCheckpoint(BFPOTrainer):
    """After each of our saves, transformers' own ``Trainer._save_checkpoint`` on the same state into
    ``base_dir`` (a test's comparison, not a pattern for production)."""

    base_dir = ""

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        out = self.args.output_dir
        self.args.output_dir = self.base_dir
        try:
            Trainer._save_checkpoint(self, model, trial)
        finally:
            self.args.output_dir = out


def test_checkpoint_holds_what_the_base_trainer_writes_and_no_trainer_method_is_patched(tok, tmp_path):
    cfg = config(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    tr = AlsoBaseCheckpoint(tiny_llama(tok), cfg, pairs(), processing_class=tok)
    tr.base_dir = str(tmp_path / "base")
    tr.train()
    assert not {"_get_output_dir", "_save_checkpoint"} & set(vars(tr))  # nothing replaced on the instance
    ours, base = Path(cfg.output_dir) / "checkpoint-2", tmp_path / "base" / "checkpoint-2"
    assert ours.is_dir() and not (Path(cfg.output_dir) / CHECKPOINT_STAGING).exists()
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in base.iterdir())
    assert json.loads((ours / "trainer_state.json").read_text()) == json.loads(
        (base / "trainer_state.json").read_text()
    )
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt"):
        assert (ours / name).stat().st_size == (base / name).stat().st_size


def test_a_save_killed_midway_leaves_no_checkpoint_and_the_next_save_clears_it(tok, tmp_path, monkeypatch):
    cfg = config(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    original = BFPOTrainer._save_rng_state

    def rng_state(self, output_dir):
        if self.state.global_step == 4:
            raise Killed("killed while writing checkpoint-4")
        original(self, output_dir)

    monkeypatch.setattr(BFPOTrainer, "_save_rng_state", rng_state)
    tr = BFPOTrainer(tiny_llama(tok), cfg, pairs(), processing_class=tok)
    with pytest.raises(Killed):
        tr.train()
    out = Path(cfg.output_dir)
    assert (out / CHECKPOINT_STAGING / "checkpoint-4" / "model.safetensors").exists()  # half written, staged
    assert not (out / "checkpoint-4").exists()
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-2")
    monkeypatch.setattr(BFPOTrainer, "_save_rng_state", original)
    again = BFPOTrainer(tiny_llama(tok), cfg, pairs(), processing_class=tok)
    again.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert (out / "checkpoint-4" / "trainer_state.json").exists() and not (out / CHECKPOINT_STAGING).exists()
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_composition_is_recorded_only_by_the_callback(tok, tmp_path):
    data = pairs(n=16)  # 4 micro-batches of 4 per epoch: every step accumulates 2
    plain = BFPOTrainer(tiny_llama(tok), config(tmp_path / "a", max_steps=1), data, processing_class=tok)
    plain.train()
    assert plain.composition is None  # not recorded unless asked
    cb = BatchCompositionCallback()
    cfg = config(tmp_path / "b", max_steps=3, gradient_accumulation_steps=2, buffered=True)
    tr = BFPOTrainer(tiny_llama(tok), cfg, data, processing_class=tok, callbacks=[cb])
    tr.train()
    assert tr.composition is cb.records
    assert [c["step"] for c in cb.records] == [0, 0, 1, 1, 2, 2]  # two micro-batches per optimizer step
    assert all(c["rank"] == 0 and c["safety"] == c["helpful"] == 2 for c in cb.records)


def test_metrics_read_the_right_fields(tok, tmp_path):
    """One step on 8 pairs, two of each Figure-3 case: the logged metrics agree with each other and with
    the batch, which a swapped column would break."""
    tr = BFPOTrainer(
        tiny_llama(tok),
        config(tmp_path, max_steps=1, per_device_train_batch_size=8, learning_rate=1e-3),
        pairs(),
        processing_class=tok,
    )
    tr.train()
    log = next(h for h in tr.state.log_history if "loss" in h)
    assert log["rewards/margins"] == pytest.approx(log["rewards/chosen"] - log["rewards/rejected"], abs=1e-6)
    assert log["batch/safety_fraction"] == 0.5
    counts = {k: v for k, v in log.items() if k.startswith("count/")}
    assert sorted(counts.values()) == [2.0, 2.0, 2.0, 2.0]
    assert 0.0 <= log["rewards/accuracies"] <= 1.0
    # at step 0 the policy is the reference: every margin is 0, so every case's mean margin is 0
    assert all(log[k] == pytest.approx(0.0, abs=1e-5) for k in log if k.startswith("margins/"))


def _dropout_live(model) -> list:
    live = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p != 0]
    live += [n for n, m in model.named_modules() if getattr(m, "attention_dropout", 0) not in (0, 0.0)]
    return live


def _with_dropout(tok, seed=0):
    model = tiny_llama(tok, seed=seed)
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.3
    model.config.attention_dropout = 0.3
    return model


@pytest.mark.parametrize("reference", ["copy", "explicit", "lora"])
def test_dropout_is_off_in_the_policy_and_the_reference(tok, tmp_path, reference):
    model, ref = _with_dropout(tok), None
    if reference == "explicit":
        ref = _with_dropout(tok, seed=1)
    if reference == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=["q_proj", "v_proj"])
        )
        assert _dropout_live(model)  # lora_dropout modules
    assert _dropout_live(model)
    cfg = config(tmp_path, max_steps=1, precompute_ref_log_probs=False)
    tr = BFPOTrainer(model, cfg, pairs(), processing_class=tok, ref_model=ref)
    assert _dropout_live(tr.model) == []
    assert tr.model.config.attention_dropout == 0.0
    if reference == "lora":
        assert tr.ref_model is None  # the reference is the policy with adapters disabled, checked above
    else:
        assert tr.ref_model is not None and _dropout_live(tr.ref_model) == []
        assert tr.ref_model is not tr.model and (reference != "explicit" or tr.ref_model is ref)
    # and with the flag off, dropout stays where it was
    kept = BFPOTrainer(
        _with_dropout(tok), config(tmp_path / "keep", max_steps=1, disable_dropout=False), pairs(), processing_class=tok
    )
    assert _dropout_live(kept.model)


@pytest.mark.spawns
def test_import_bfpo_and_help_import_no_torch():
    """``import bfpo`` and ``bfpo --help`` (and a command's --help) stay free of torch and transformers."""
    code = (
        "import sys, runpy; sys.argv = {argv!r}\n"
        "try:\n    runpy.run_module('bfpo.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules)\n"
        "print('HEAVY', heavy)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for argv in (["bfpo", "--help"], ["python"]):
        snippet = (
            code.format(argv=argv)
            if argv[0] == "bfpo"
            else (
                "import sys, bfpo; bfpo.__version__\n"
                "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules))"
            )
        )
        proc = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY []" in proc.stdout, (argv, proc.stdout[-2000:])
        if argv[0] == "bfpo":
            assert "train" in proc.stdout  # the help was printed


def test_version_has_one_source():
    import importlib.metadata

    import bfpo

    assert bfpo.__version__ == importlib.metadata.version("bfpo")
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and "\nversion = " not in text.split("[project]")[1].split("\n[")[0]
