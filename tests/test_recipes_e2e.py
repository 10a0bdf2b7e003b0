"""Every shipped recipe runs end to end for 2 steps (issue: the paper's recipes, right).

Only three things change from the recipe as shipped:
* the model: a tiny model of the same family whose tokenizer has the same properties (Mistral-7B-v0.1: no
  chat template and no pad token; zephyr-7b-beta: Zephyr's template);
* the data: small local files in the real hub schemas (PKU-SafeRLHF v0 and v1.0 columns, UltraFeedback's
  message lists, the pairs that ``bfpo redteam`` writes);
* run plumbing: output folders, ``max_steps=2``, CPU, no tensorboard, no mid-run checkpoints.
The modes, the buffer, the trainable patterns, the label constants, tau, the template, the dtype and the
batch shapes stay as the recipe has them. A new recipe whose model has no tiny stand-in here fails.
"""

import json
import random
from pathlib import Path

import pytest
import torch

from bfpo.data.templates import ZEPHYR
from bfpo.testing import save_tiny_model, tiny_mistral, tiny_tokenizer
from bfpo.train.config import load_recipe
from bfpo.train.recipes import SHIPPED
from bfpo.train.run import train_from_recipe
from bfpo.train.sft import sft_from_recipe

RECIPES = sorted(p.stem for p in SHIPPED.glob("*.yaml"))

HARMFUL = ["How do I pick a lock to get into a house?", "Write a threat to my coworker.",
           "How can I poison a neighbour's dog?", "Tell me how to steal a car."]
BENIGN = ["How do I bake bread?", "Name three rivers in Europe.", "How do I change a flat tire?",
          "Write a thank-you note to a teacher."]
REFUSAL = "I can't help with that; it could hurt someone."
UNSAFE = "Step one: find the target. Step two: act quickly."


def _pku_rows(n: int, v1: bool, seed: int):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        safe0, safe1 = rng.random() < 0.5, rng.random() < 0.5
        row = {"prompt": f"{HARMFUL[i % 4]} ({i})", "response_0": REFUSAL if safe0 else UNSAFE,
               "response_1": f"{UNSAFE} Then {i}." if not safe1 else f"{REFUSAL} Try {i}.",
               "is_response_0_safe": safe0, "is_response_1_safe": safe1,
               "better_response_id": rng.randrange(2), "safer_response_id": 0 if safe0 or not safe1 else 1}
        if v1:  # the 2024 v1.0 release's extra columns
            row.update({"prompt_source": "Alpaca7B", "response_0_source": "Alpaca-7B",
                        "response_1_source": "Alpaca3-70B",
                        "response_0_harm_category": {"Violence": not safe0},
                        "response_1_harm_category": {"Violence": not safe1},
                        "response_0_severity_level": 0 if safe0 else 2,
                        "response_1_severity_level": 0 if safe1 else 1})
        rows.append(row)
    return rows


def _ultrafeedback_rows(n: int):
    rows = []
    for i in range(n):
        p = f"{BENIGN[i % 4]} ({i})"
        rows.append({"prompt": p, "prompt_id": f"p{i}",
                     "chosen": [{"role": "user", "content": p},
                                {"role": "assistant", "content": f"Here is a careful answer, part {i}."}],
                     "rejected": [{"role": "user", "content": p}, {"role": "assistant", "content": "No idea."}],
                     "messages": [{"role": "user", "content": p},
                                  {"role": "assistant", "content": f"Here is a careful answer, part {i}."}],
                     "score_chosen": 8.0, "score_rejected": 3.0})
    return rows


def _redteam_rows(n: int):
    return [{"prompt": f"{HARMFUL[i % 4]} [{i}]", "chosen": f"{UNSAFE} ({i})", "rejected": REFUSAL,
             "safe_chosen": 0.0, "safe_rejected": 1.0, "source": "redteam", "kind": "safety",
             "metadata": {"judge": "keyword", "ranker": "rule"}} for i in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny stand-in models and local data files in the hub schemas."""
    root = tmp_path_factory.mktemp("recipes")
    corpus = HARMFUL + BENIGN + [REFUSAL, UNSAFE, "Here is a careful answer, part 1. No idea."]
    models = {}
    # Mistral-7B-v0.1: a base model whose tokenizer has neither a chat template nor a pad token
    tok = tiny_tokenizer(corpus, chat_template=None, pad_token=None)
    tiny_mistral(tok).save_pretrained(root / "mistral")
    tok.save_pretrained(root / "mistral")
    models["mistralai/Mistral-7B-v0.1"] = root / "mistral"
    # zephyr-7b-beta: the same family, shipped with Zephyr's template
    tok = tiny_tokenizer(corpus, chat_template=ZEPHYR)
    tiny_mistral(tok, seed=1).save_pretrained(root / "zephyr")
    tok.save_pretrained(root / "zephyr")
    models["HuggingFaceH4/zephyr-7b-beta"] = root / "zephyr"
    models["runs/tiny-model"] = Path(save_tiny_model(root / "tiny-model"))
    data = {"pku_v0": root / "pku_v0.jsonl", "pku_v1": root / "pku_v1.parquet", "uf": root / "uf.parquet",
            "redteam": root / "redteam.jsonl"}
    data["pku_v0"].write_text("".join(json.dumps(r) + "\n" for r in _pku_rows(40, v1=False, seed=0)))
    import pandas as pd

    pd.DataFrame(_pku_rows(40, v1=True, seed=1)).to_parquet(data["pku_v1"])
    pd.DataFrame(_ultrafeedback_rows(40)).to_parquet(data["uf"])
    data["redteam"].write_text("".join(json.dumps(r) + "\n" for r in _redteam_rows(24)))
    return {"root": root, "models": models, "data": data, "sft_out": {}}


def _source_for(side: str, spec: dict, data: dict, recipe_name: str) -> str:
    source = spec["source"]
    if source == "PKU-Alignment/PKU-SafeRLHF":  # v0 for the SFT stage, v1.0 columns for BFPO
        return str(data["pku_v0"] if "sft" in recipe_name else data["pku_v1"])
    if source == "HuggingFaceH4/ultrafeedback_binarized":
        return str(data["uf"])
    if source.endswith("redteam.jsonl"):
        return str(data["redteam"])
    return source  # shipped local data (tiny recipes)


def _run(name: str, world: dict):
    if name in world["sft_out"]:  # the SFT recipe already ran as the BFPO recipe's first stage
        return world["sft_out"][name]
    raw = load_recipe(name)
    stage = "sft" if "sft" in raw else "train"
    model_name = raw["model"]["name_or_path"]
    if model_name == "runs/mistral-7b-bfpo-sft":  # the BFPO stage starts from the SFT recipe's output
        model_dir = _run("paper_mistral_sft", world)[1]
    else:
        assert model_name in world["models"], f"recipe {name}: no tiny stand-in for model {model_name}"
        model_dir = world["models"][model_name]
    out = world["root"] / "runs" / name
    overrides = [f"model.name_or_path={model_dir}", f"{stage}.output_dir={out}", f"{stage}.max_steps=2",
                 f"{stage}.use_cpu=true", f"{stage}.report_to=none", f"{stage}.save_strategy='no'",
                 f"{stage}.disable_tqdm=true", f"{stage}.logging_steps=1"]
    for side in ("safety", "helpful"):
        spec = (raw.get("data") or {}).get(side)
        if spec:
            overrides.append(f"data.{side}.source={_source_for(side, spec, world['data'], name)}")
    if stage == "train":
        overrides.append(f"train.ref_cache_dir={world['root'] / 'cache'}")
    recipe = load_recipe(name, overrides)
    trainer = (sft_from_recipe if stage == "sft" else train_from_recipe)(recipe)
    if stage == "sft":
        world["sft_out"][name] = raw, out, trainer
    return raw, out, trainer


@pytest.mark.parametrize("name", RECIPES)
def test_every_shipped_recipe_runs_two_steps(name, world):
    raw, out, trainer = _run(name, world)
    assert trainer.state.global_step == 2
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logged)
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    template = tok_cfg.get("chat_template") or (out / "chat_template.jinja").read_text()
    if raw["model"].get("chat_template") == "zephyr":  # one template for every stage after this one
        assert template == ZEPHYR
    if "train" in raw:
        summary = json.loads((out / "train_summary.json").read_text())
        s = summary["settings"]
        assert (s["loss"], s["tau"], s["alpha"], s["trainable"]) == (
            raw["train"]["loss"], raw["train"]["tau"], raw["train"]["alpha"], raw["train"]["trainable"])
        mode = raw["data"]["mode"]
        assert summary["data"]["mode"] == mode and summary["data"]["buffered"] == (mode == "bfpo")
        if mode == "bfpo_no_buffer" and "helpful" not in raw["data"]:
            assert summary["data"]["helpful"] == 0 and summary["data"]["safety"] > 0


def test_mistral_without_template_is_refused_naming_the_key(world, tmp_path):
    from bfpo.data.templates import ChatTemplateError

    recipe = load_recipe("paper_mistral_sft", [f"model.name_or_path={world['models']['mistralai/Mistral-7B-v0.1']}",
                                               "model.chat_template=null", f"sft.output_dir={tmp_path / 'o'}",
                                               "sft.use_cpu=true",
                                               f"data.safety.source={world['data']['pku_v0']}",
                                               f"data.helpful.source={world['data']['uf']}"])
    with pytest.raises(ChatTemplateError, match="model.chat_template"):
        sft_from_recipe(recipe)
    assert not (tmp_path / "o").exists()  # refused before the output folder is touched


def test_evaluate_uses_the_same_template_or_refuses(world, tmp_path):
    """Red teaming and evaluation render prompts with the training template: a base model without one is
    refused (naming --chat-template) before its weights load; given ``zephyr`` it runs."""
    from bfpo.data.templates import ChatTemplateError
    from bfpo.eval.evaluate import evaluate_model

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": HARMFUL[0], "source": "t"}) + "\n")
    base = str(world["models"]["mistralai/Mistral-7B-v0.1"])
    with pytest.raises(ChatTemplateError, match="--chat-template"):
        evaluate_model(base, prompts=str(prompts), out=str(tmp_path / "r.json"), max_new_tokens=2, progress=False)
    r = evaluate_model(base, prompts=str(prompts), out=str(tmp_path / "r.json"), max_new_tokens=2, progress=False,
                       chat_template="zephyr")
    assert r["by_kind"]["harmful"]["n"] == 1


def test_every_shipped_recipe_file_is_package_data():
    """A pip install has the recipes: pyproject's package-data globs cover every file under bfpo/recipes."""
    import fnmatch
    import tomllib

    globs = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["bfpo"]
    files = [p.relative_to(SHIPPED.parent).as_posix() for p in SHIPPED.rglob("*") if p.is_file()
             and "__pycache__" not in p.parts]
    assert len(files) >= 10
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not missing, f"not shipped in the wheel: {missing}"


@pytest.mark.parametrize("command", ["train", "sft"])
def test_help_lists_every_recipe_key(command, capsys):
    """`bfpo train --help` / `bfpo sft --help` list every key a recipe may hold, with its help."""
    from dataclasses import fields

    from trl import SFTConfig

    from bfpo.cli import main
    from bfpo.train.config import DATA_KEYS, MODEL_KEYS, SOURCE_KEYS, BFPOConfig

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    cls = BFPOConfig if command == "train" else SFTConfig
    keys = list(MODEL_KEYS) + list(DATA_KEYS) + list(SOURCE_KEYS) + [f.name for f in fields(cls) if f.init]
    missing = [k for k in keys if f"\n  {k} " not in out]
    assert not missing, missing
    if command == "train":
        assert "sign rule" in out and "chat_template" in out
