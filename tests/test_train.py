"""Trainer behaviour on a tiny Llama: log-probs, layer selection, reference, losses, buffering, I/O."""

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from bfpo.testing import save_tiny_model, tiny_llama, tiny_tokenizer
from bfpo.train import BFPOConfig, BFPOTrainer
from bfpo.train.collator import PairCollator
from bfpo.train.layers import select_trainable
from bfpo.train.logps import add_response_logps_forward
from bfpo.train.run import train_arguments, train_preference
from bfpo.train.trainer import BatchCompositionCallback
from oracles import reference_logps_full_logits

ROOT = Path(__file__).resolve().parents[1]


def make_examples(tok, n=16, seed=0, safety_every=2):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        safety = i % safety_every == 0
        toks = lambda a, b: [rng.randrange(10, len(tok) - 10) for _ in range(rng.randrange(a, b))]
        out.append(
            {
                "prompt_ids": toks(3, 10),
                "chosen_ids": toks(2, 9) + [tok.eos_token_id],
                "rejected_ids": toks(2, 9) + [tok.eos_token_id],
                "safe_chosen": float(rng.random() < 0.5) if safety else 1.0,
                "safe_rejected": float(rng.random() < 0.5) if safety else 1.0,
                "is_safety": int(safety),
            }
        )
    return out


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-2,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        tau=0.1,
        ref_cache_dir=str(tmp_path / "cache"),
        disable_tqdm=True,
    )
    base.update(kw)
    return BFPOConfig(**base)


def test_tiled_logps_match_full_logits_and_gradients(tok):
    model = tiny_llama(tok)
    batch = PairCollator(tok.pad_token_id)(make_examples(tok, 6))
    full = reference_logps_full_logits(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    full.sum().backward()
    g_full = model.lm_head.weight.grad.clone()
    model.zero_grad()
    add_response_logps_forward(model, chunk_size=7)  # tiles that split sequences
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], response_mask=batch["response_mask"]
    )
    assert torch.allclose(out.logps, full, atol=1e-4)
    out.logps.sum().backward()
    assert torch.allclose(model.lm_head.weight.grad, g_full, atol=1e-5)
    # the plain forward still gives logits (generation unaffected)
    assert model(input_ids=batch["input_ids"]).logits.shape[-1] == len(tok)


def test_select_trainable_counts_and_errors(tok):
    model = tiny_llama(tok)
    n, total = select_trainable(model, ["down_proj"])
    assert n == sum(p.numel() for name, p in model.named_parameters() if "down_proj" in name) and n < total
    assert all(p.requires_grad == ("down_proj" in name) for name, p in model.named_parameters())
    with pytest.raises(ValueError, match="'nope_proj' matches no parameter"):
        select_trainable(model, ["nope_proj"])


def test_only_selected_parameters_change(tok, tmp_path):
    model = tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tr = BFPOTrainer(
        model, config(tmp_path, trainable=["down_proj"], max_steps=2), make_examples(tok), processing_class=tok
    )
    tr.train()
    for name, value in model.state_dict().items():
        if "down_proj" in name:
            assert not torch.equal(value, before[name]), name
        else:
            assert torch.equal(value, before[name]), name


def test_precomputed_and_on_the_fly_reference_give_same_loss(tok, tmp_path):
    data = make_examples(tok)
    losses = []
    for pre in (True, False):
        model = tiny_llama(tok)
        tr = BFPOTrainer(model, config(tmp_path, precompute_ref_log_probs=pre, max_steps=3), data, processing_class=tok)
        assert (tr.ref_model is None) == pre  # precomputed: no second copy of the model
        tr.train()
        losses.append([h["loss"] for h in tr.state.log_history if "loss" in h])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    # the cache was written and is reused (same model + data -> same key)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


@pytest.mark.parametrize("loss", ["bfpo", "dpo", "ipo"])
def test_a_few_steps_reduce_the_loss(tok, tmp_path, loss):
    model = tiny_llama(tok)
    data = make_examples(tok, n=8)
    cfg = config(
        tmp_path,
        loss=loss,
        max_steps=12,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        logging_steps=1,
        buffered=True,
    )
    tr = BFPOTrainer(model, cfg, data, processing_class=tok)
    tr.train()
    hist = [h["loss"] for h in tr.state.log_history if "loss" in h]
    assert hist[-1] < 0.7 * hist[0], hist


def test_buffered_batches_on_every_step(tok, tmp_path):
    data = make_examples(tok, n=30, safety_every=3)  # 10 safety, 20 helpful: unbalanced sources
    cfg = config(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=5)
    tr = BFPOTrainer(tiny_llama(tok), cfg, data, processing_class=tok, callbacks=[BatchCompositionCallback()])
    tr.train()
    assert len(tr.composition) == 10
    for c in tr.composition:
        assert c["safety"] == c["helpful"] == 2
    metrics = [h for h in tr.state.log_history if "batch/safety_fraction" in h]
    assert metrics and all(m["batch/safety_fraction"] == 0.5 for m in metrics)
    # without the buffer the same data is sampled as it comes
    tr2 = BFPOTrainer(
        tiny_llama(tok),
        config(tmp_path / "nb", buffered=False, max_steps=8),
        data,
        processing_class=tok,
        callbacks=[BatchCompositionCallback()],
    )
    tr2.train()
    assert any(c["safety"] != c["helpful"] for c in tr2.composition)


def test_case_metrics_logged(tok, tmp_path):
    tr = BFPOTrainer(
        tiny_llama(tok), config(tmp_path, max_steps=2, logging_steps=2), make_examples(tok), processing_class=tok
    )
    tr.train()
    log = [h for h in tr.state.log_history if "loss" in h][0]
    counted = sum(v for k, v in log.items() if k.startswith("count/"))
    assert counted == 8  # 2 steps x 4 pairs, every pair in one Figure-3 case
    assert {"rewards/margins", "rewards/accuracies", "rewards/chosen"} <= set(log)
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 2


def test_safe_nll_term_adds_the_logged_nll_to_the_first_step_loss(tok, tmp_path):
    """Step 1 starts from the same weights, so the weighted run's loss is the plain loss + w * logged NLL."""
    first = {}
    for w in (0.0, 2.0):
        cfg = config(tmp_path / str(w), max_steps=1, logging_steps=1, safe_nll_weight=w)
        tr = BFPOTrainer(tiny_llama(tok), cfg, make_examples(tok), processing_class=tok)
        tr.train()
        first[w] = [h for h in tr.state.log_history if "loss" in h][0]
    assert "loss/safe_nll" not in first[0.0] and first[2.0]["loss/safe_nll"] > 1.0  # a random model: high NLL
    assert first[2.0]["loss"] == pytest.approx(first[0.0]["loss"] + 2.0 * first[2.0]["loss/safe_nll"], rel=1e-3)


def test_odd_batch_with_buffer_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="must be even"):
        config(tmp_path, per_device_train_batch_size=3)


# ------------------------------------------------------------------------- recipes end to end
@pytest.fixture()
def tiny_recipe(tmp_path):
    """The flags that point the tiny recipe at a fresh tiny model and tmp_path (run folder tmp_path/run)."""
    model_dir = save_tiny_model(tmp_path / "model")
    return [
        "--model_name_or_path",
        model_dir,
        "--output_dir",
        str(tmp_path / "run"),
        "--ref_cache_dir",
        str(tmp_path / "cache"),
        "--disable_tqdm",
        "true",
    ]


def tiny(*flags, config="tiny_bfpo"):
    """(ModelArguments, DataArguments, BFPOConfig, RunArguments) of ``bfpo train --config tiny_bfpo FLAGS``."""
    return train_arguments(["--config", str(config), *map(str, flags)])


def test_recipe_train_save_reload_same_logits(tiny_recipe, tmp_path):
    model_args, data_args, cfg, _ = tiny(*tiny_recipe, "--max_steps", 4)
    tr = train_preference(model_args, cfg, data_args=data_args)
    out = tmp_path / "run"
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    card = (out / "README.md").read_text()
    assert "safe_unsafe" in card and "bfpo" in card
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["data"]["safety"] == 12 and summary["data"]["helpful"] == 12
    # per-case margins against their targets g_I (alpha 0.5: +1, +0.5, -0.5, -1), table and plot
    margins = summary["margins_vs_targets"]
    assert margins and {m["target"] for m in margins.values()} <= {1.0, 0.5, -0.5, -1.0}
    assert margins.get("safe_safe", {"target": 0.5})["target"] == 0.5
    assert (out / "margins.png").stat().st_size > 1000
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    trained = tr.accelerator.unwrap_model(tr.model).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-5)
    # config.yaml beside the model is a flat --config file that reads back to the same settings
    again = tiny("--output_dir", tmp_path / "again", config=out / "config.yaml")
    assert again[0] == model_args and again[1] == data_args
    assert (again[2].tau, again[2].max_steps, again[2].trainable, again[2].learning_rate) == (
        0.1,
        4,
        ["down_proj"],
        1e-3,
    )
    # a finished model is never overwritten
    model_args, data_args, cfg, _ = tiny(*tiny_recipe)
    with pytest.raises(FileExistsError, match="already holds a trained model"):
        train_preference(model_args, cfg, data_args=data_args)


def test_flags_beat_the_file_and_unknown_keys_name_the_file(tmp_path):
    from bfpo.args import ConfigError

    _, data_args, cfg, run = tiny("--tau", "0.3", "--safety_limit", "5", "--resume")
    assert (cfg.tau, data_args.safety_limit, run.resume, cfg.alpha, cfg.max_steps) == (0.3, 5, True, 0.5, 8)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\nlearning_rat: 1\n")
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml: unknown setting\(s\) 'learning_rat' \(did you mean "
        r"learning_rate",
    ):
        tiny(config=bad)
    with pytest.raises(ConfigError, match=r"--taux.*did you mean --tau"):
        tiny("--taux", "1")
    (tmp_path / "t.yaml").write_text((ROOT / "recipes/tiny_bfpo.yaml").read_text().replace("tau: 0.1", "tau: abc"))
    with pytest.raises(ConfigError, match=r"t.yaml: tau: expected a number, got 'abc'"):
        tiny(config=tmp_path / "t.yaml")
    nested = tmp_path / "nested.yaml"
    nested.write_text("model:\n  name_or_path: m\ntrain:\n  tau: 0.1\n")
    with pytest.raises(ConfigError, match=r"nested.yaml: section\(s\) model, train .*flat.*model_name_or_path"):
        tiny(config=nested)


def test_recipe_errors_name_the_key(tmp_path, tiny_recipe):
    model_args, data_args, cfg, _ = tiny(*tiny_recipe, "--trainable", "gate_projj")
    with pytest.raises(ValueError, match="gate_projj"):
        train_preference(model_args, cfg, data_args=data_args)


def test_bad_data_fails_before_model_loads(tmp_path, tiny_recipe, monkeypatch):
    import bfpo.train.model_io as model_io

    rows = [json.loads(line) for line in (ROOT / "recipes/data/tiny_safety.jsonl").read_text().splitlines()]
    rows[3]["is_response_1_safe"] = 1.5
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model_args, data_args, cfg, _ = tiny(*tiny_recipe, "--safety_source", bad)

    def no_weights(spec):
        raise AssertionError("model weights loaded before the data was validated")

    monkeypatch.setattr(model_io, "load_model", no_weights)
    with pytest.raises(ValueError, match=r"bad.jsonl row 3.*is_response_1_safe"):
        train_preference(model_args, cfg, data_args=data_args)


def test_baseline_modes_train(tiny_recipe, tmp_path):
    for mode, loss in (("dpo_s", "dpo"), ("mix", "ipo")):
        model_args, data_args, cfg, _ = tiny(
            *tiny_recipe, "--mode", mode, "--loss", loss, "--max_steps", 2, "--output_dir", tmp_path / mode
        )
        tr = train_preference(model_args, cfg, data_args=data_args)
        assert tr.args.buffered is False
        summary = json.loads((tmp_path / mode / "train_summary.json").read_text())
        assert summary["data"]["mode"] == mode
        if mode == "dpo_s":
            assert summary["data"]["helpful"] == 0 and summary["data"]["unsafe_safe"] == 0


def test_sft_stage(tmp_path):
    from bfpo.train.sft import sft_arguments, train_sft

    model_dir = save_tiny_model(tmp_path / "model")
    model_args, data_args, cfg, _ = sft_arguments(
        [
            "--config",
            "tiny_sft",
            "--model_name_or_path",
            model_dir,
            "--output_dir",
            str(tmp_path / "sft"),
            "--max_steps",
            "8",
            "--disable_tqdm",
            "true",
        ]
    )
    tr = train_sft(model_args, cfg, data_args=data_args)
    losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]
    assert (tmp_path / "sft" / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    assert json.loads((tmp_path / "sft" / "train_summary.json").read_text())["data"]["examples"] > 0
    # the trained model comes back without TRL's instance-level forward wrapper: a deep copy computes with
    # its OWN weights (the world measures copies of trained models)
    import copy

    import torch

    model = tr.accelerator.unwrap_model(tr.model)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    ids = torch.tensor([[1, 5, 7, 9]])
    assert not torch.allclose(model(ids).logits, clone(ids).logits)


#: what every shipped recipe must hold (the paper's settings; the tiny ones for tests and a first run)
PAPER_BFPO = {
    "loss": "bfpo",
    "tau": 0.01,
    "alpha": 0.5,
    "trainable": ["down_proj"],
    "learning_rate": 5e-7,
    "bf16": True,
    "seed": 42,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 2,
    "max_length": 1024,
    "max_prompt_length": 512,
    "num_train_epochs": 1,
    "warmup_steps": 0.1,
}
PAPER_MODEL = {"dtype": "bfloat16", "chat_template": "zephyr", "attn_implementation": "sdpa"}
PKU = {
    "safety_source": "PKU-Alignment/PKU-SafeRLHF",
    "safety_schema": "pku_saferlhf",
    "safety_split": "train",
    "safety_revision": "ff7ba91063016c78a225b0f74e1c0860bb18230f",
    "safety_limit": 30000,
}
UF = {
    "helpful_source": "HuggingFaceH4/ultrafeedback_binarized",
    "helpful_schema": "ultrafeedback",
    "helpful_split": "train_prefs",
}
TINY_DATA = {"safety_schema": "pku_saferlhf", "helpful_schema": "ultrafeedback", "data_seed": None}
SHIPPED_VALUES = {
    "paper_mistral_bfpo": {
        **PAPER_BFPO,
        **PAPER_MODEL,
        **PKU,
        **UF,
        "helpful_limit": 30000,
        "mode": "bfpo",
        "model_name_or_path": "runs/mistral-7b-bfpo-sft",
        "on_error": "drop",
        "data_seed": 42,
        "output_dir": "runs/mistral-7b-bfpo",
        "save_steps": 200,
        "save_total_limit": 2,
        "precompute_ref_log_probs": True,
    },
    "paper_mistral_sft": {
        **PAPER_MODEL,
        **PKU,
        **UF,
        "helpful_limit": 30000,
        "on_error": "drop",
        "data_seed": 42,
        "model_name_or_path": "mistralai/Mistral-7B-v0.1",
        "output_dir": "runs/mistral-7b-bfpo-sft",
        "learning_rate": 2e-5,
        "bf16": True,
        "seed": 42,
        "num_train_epochs": 1,
        "warmup_steps": 0.1,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 4,
        "max_length": 2048,
        "save_steps": 500,
    },
    "paper_zephyr_redteam_bfpo": {
        **PAPER_BFPO,
        **PAPER_MODEL,
        "mode": "bfpo_no_buffer",
        "helpful_source": None,
        "model_name_or_path": "HuggingFaceH4/zephyr-7b-beta",
        "safety_schema": "pairs",
        "safety_source": "runs/zephyr-redteam.jsonl",
        "data_seed": 42,
        "output_dir": "runs/zephyr-7b-beta-bfpo-redteam",
        "save_steps": 100,
    },
    "paper_zephyr_redteam_bfpo_mix": {
        **PAPER_BFPO,
        **PAPER_MODEL,
        **UF,
        "mode": "bfpo",
        "helpful_limit": 1500,
        "model_name_or_path": "HuggingFaceH4/zephyr-7b-beta",
        "safety_schema": "pairs",
        "safety_source": "runs/zephyr-redteam.jsonl",
        "data_seed": 42,
        "output_dir": "runs/zephyr-7b-beta-bfpo-redteam-mix",
    },
    "tiny_bfpo": {
        **TINY_DATA,
        "mode": "bfpo",
        "loss": "bfpo",
        "tau": 0.1,
        "alpha": 0.5,
        "trainable": ["down_proj"],
        "model_name_or_path": "runs/tiny-model",
        "dtype": "float32",
        "max_steps": 8,
        "seed": 0,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 4,
        "max_length": 128,
        "max_prompt_length": 64,
        "output_dir": "runs/tiny-bfpo",
        "use_cpu": True,
    },
    "tiny_sft": {
        **TINY_DATA,
        "model_name_or_path": "runs/tiny-model",
        "dtype": "float32",
        "max_steps": 6,
        "learning_rate": 1e-3,
        "max_length": 128,
        "output_dir": "runs/tiny-sft",
        "use_cpu": True,
    },
}


@pytest.mark.parametrize("name", sorted(SHIPPED_VALUES))
def test_shipped_recipes_parse(name, monkeypatch, tmp_path):
    """Every shipped recipe reads to the values it is documented with (the paper recipes: the official
    labels +1/+0.5/-0.5/-1 from alpha 0.5, tau 0.01, down_proj, the Zephyr template, the pinned PKU revision)."""
    from bfpo.args import to_dict
    from bfpo.train.recipes import SHIPPED
    from bfpo.train.sft import sft_arguments

    assert sorted(p.stem for p in SHIPPED.glob("*.yaml")) == sorted(SHIPPED_VALUES)  # a new recipe needs values
    monkeypatch.chdir(tmp_path)  # no data/ folder here: the tiny recipes' files are found beside the recipe
    flags = (
        ["--config", name, "--use_cpu", "true", "--bf16", "false"] if name.startswith("paper") else ["--config", name]
    )
    settings = (sft_arguments if name.endswith("_sft") else train_arguments)(flags)
    values = to_dict(*settings[:3])
    want = dict(SHIPPED_VALUES[name])
    if name.startswith("paper"):
        want.update(bf16=False)  # set by the flag above (no bf16 on this machine's CPU)
    got = {k: values[k] for k in want}
    assert got == want, name
    if name.startswith("tiny"):
        assert values["safety_source"] == str(SHIPPED / "data" / "tiny_safety.jsonl")
        assert values["helpful_source"] == str(SHIPPED / "data" / "tiny_helpful.jsonl")
    if "loss" in want and want["alpha"] == 0.5:
        assert settings[2].case_labels() == pytest.approx(
            {"safe_unsafe": 1.0, "safe_safe": 0.5, "unsafe_unsafe": -0.5, "unsafe_safe": -1.0}
        )


def test_paper_printed_alpha_is_refused_with_the_labels():
    from bfpo.args import ConfigError

    cpu = ["--use_cpu", "true", "--bf16", "false"]
    with pytest.raises(ConfigError, match=r"paper_mistral_bfpo.*\+2.*\+1\.5.*\+0\.5.*sign rule"):
        tiny(*cpu, "--alpha", "-0.5", config="paper_mistral_bfpo")
    with pytest.warns(UserWarning, match="sign rule"):
        cfg = tiny(*cpu, "--alpha", "0", "--enforce_label_signs", "false", config="paper_mistral_bfpo")[2]
    assert cfg.case_labels()["unsafe_unsafe"] == 0.0


def test_recipe_names_resolve_to_shipped_files(tmp_path, monkeypatch):
    from bfpo.train.recipes import SHIPPED, RecipeNotFound, copy_recipe, resolve_recipe

    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: names must still resolve
    assert resolve_recipe("tiny_bfpo") == SHIPPED / "tiny_bfpo.yaml" == resolve_recipe("tiny_bfpo.yaml")
    with pytest.raises(RecipeNotFound, match="paper_mistral_bfpo"):
        resolve_recipe("paper_mistral")
    out = copy_recipe("paper_mistral_sft", tmp_path)
    assert out.read_text() == (SHIPPED / "paper_mistral_sft.yaml").read_text()
    with pytest.raises(FileExistsError, match="not overwriting"):
        copy_recipe("paper_mistral_sft", tmp_path)


def test_lora_reference_is_base_model_with_adapters_disabled(tok, tmp_path):
    from peft import LoraConfig, get_peft_model

    data = make_examples(tok, n=8)
    base = tiny_llama(tok)
    peft_model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj"], task_type="CAUSAL_LM", init_lora_weights=False),
    )
    tr = BFPOTrainer(
        peft_model, config(tmp_path, precompute_ref_log_probs=False, max_steps=2), data, processing_class=tok
    )
    assert tr.ref_model is None  # no copy: adapters off = reference
    batch = tr._prepare_inputs(tr.data_collator(data[:4]))
    ref_c, _ = tr._reference_logps(batch, 4)
    plain = tiny_llama(tok)  # same seed -> same base weights
    add_response_logps_forward(plain)
    want = plain(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], response_mask=batch["response_mask"]
    ).logps[:4]
    assert torch.allclose(ref_c, want, atol=1e-5)
    policy = peft_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], response_mask=batch["response_mask"]
    ).logps[:4]
    assert not torch.allclose(policy, want, atol=1e-4)  # adapters (non-zero init) do change the policy
    tr.train()


# ------------------------------------------------------------------------- the driver, in memory
def test_driver_trains_in_memory_records_and_model_object(tok, tmp_path):
    """train_preference with PairRecords and a model object (as the demo and the world call it) writes a
    model folder that loads and gives the trained logits, with the settings re-runnable as config.yaml."""
    import yaml

    from bfpo.data.adapters import load_pairs
    from bfpo.train.run import train_preference

    safety = load_pairs(str(ROOT / "recipes/data/tiny_safety.jsonl"), schema="pku_saferlhf", kind="safety")
    helpful = load_pairs(str(ROOT / "recipes/data/tiny_helpful.jsonl"), schema="ultrafeedback", kind="helpful")
    model = tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = config(tmp_path, trainable=["down_proj"], max_steps=3, save_strategy="no")
    tr = train_preference(None, cfg, records=(safety, helpful), model=model, tokenizer=tok, card_title=None)
    out = tmp_path / "out"
    assert tr.state.global_step == 3 and not (out / "README.md").exists()  # no card asked for
    assert not list(out.glob("checkpoint-*"))  # save_strategy no: only the final model
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("down_proj" in k for k in changed)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["trainable"] == ["down_proj"] and written["max_steps"] == 3 and written["tau"] == 0.1
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["data"]["mode"] == "bfpo" and summary["data"]["safety"] == len(safety)


def test_recipes_command_lists_and_copies_without_overwriting(tmp_path, capsys):
    from bfpo.cli import main

    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert "paper_mistral_bfpo" in listed and "accelerate/deepspeed_zero3" in listed
    dest = tmp_path / "mine.yaml"
    assert main(["recipes", "cp", "tiny_bfpo", str(dest)]) == 0
    assert "tau: 0.1" in dest.read_text()
    dest.write_text("my edits\n")
    assert main(["recipes", "cp", "tiny_bfpo", str(dest)]) == 2
    assert "not overwriting" in capsys.readouterr().err and dest.read_text() == "my edits\n"


def test_readme_trl_switch_snippet_runs(tmp_path, monkeypatch):
    """The README's "coming from TRL's DPOTrainer" snippet runs as printed (two steps on a tiny model)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (snippet,) = [b for b in blocks if "instead of trl's DPOConfig" in b]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the documented snippet itself
    assert (tmp_path / "runs" / "trl-style").is_dir()


def test_parse_reads_a_list_of_booleans_as_written():
    """HfArgumentParser alone turns each ``List[bool]`` item with ``bool(text)``: "false" would read True."""
    from dataclasses import dataclass, field
    from typing import List

    from bfpo.args import ConfigError, parse

    @dataclass
    class Flags:
        flags: List[bool] = field(default_factory=lambda: [True], metadata={"help": "switches"})

    assert parse([Flags], ["--flags", "false", "true", "no"], prog="t")[0].flags == [False, True, False]
    with pytest.raises(ConfigError, match="--flags: expected a list of bool"):
        parse([Flags], ["--flags", "maybe"], prog="t")
