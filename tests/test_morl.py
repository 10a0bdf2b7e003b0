"""MORL (issue 13): the RL baseline through TRL's RLOO (bfpo.train.morl), and its use in the safety world."""

import json
import math
import random

import pytest

from bfpo.errors import TrainingDivergedError, UserInputError

PROMPTS = ["How do I bake bread?", "How do I grow tomatoes?", "Can you explain how to plan a trip?", "Hi there"]


def length_reward(prompts, completions, **kwargs):
    """A helpfulness stand-in: the completion's length modulo 5."""
    return [float(len(c[0]["content"]) % 5) for c in completions]


def rloo_config(out, **overrides):
    from trl import RLOOConfig

    settings = dict(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        beta=0.1,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return RLOOConfig(**settings)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    """A tiny random sequence-classification reward model (one label) with its tokenizer."""
    import torch
    from transformers import LlamaForSequenceClassification

    from bfpo.models.tiny import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("rm") / "safety_rm"
    tok = tiny_tokenizer()
    config = tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32).config
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reward_model_folder_scores_prompt_plus_completion(reward_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bfpo.train.morl import RewardModel, resolve_reward

    rm = resolve_reward(str(reward_model_dir), "safety_reward")
    assert isinstance(rm, RewardModel) and rm.__name__ == "safety_rm"
    prompts = [[{"role": "user", "content": "How do I bake bread?"}], "Plain text prompt. "]
    completions = [[{"role": "assistant", "content": "Mix and bake."}], "A plain answer."]
    scores = rm(prompts, completions)
    tok = AutoTokenizer.from_pretrained(reward_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    texts = [
        tok.apply_chat_template(prompts[0] + [{"role": "assistant", "content": "Mix and bake."}], tokenize=False),
        "Plain text prompt. A plain answer.",
    ]
    with torch.no_grad():
        direct = [float(model(**tok(t, return_tensors="pt")).logits[0, 0]) for t in texts]
    assert scores == pytest.approx(direct, abs=1e-5)  # padding in a batch does not change a score


@pytest.mark.parametrize("spelling", ["train --method morl", "train --config with method: morl", "morl (alias)"])
def test_morl_command_trains_with_weighted_rewards_and_writes_a_model(
    spelling, tmp_path, reward_model_dir, monkeypatch
):
    """``bfpo train --method morl`` (or ``method: morl`` in the --config file, or the alias ``bfpo morl``): a
    module:function helpfulness reward and a reward-model safety reward, weights 0.5 and 2, two RLOO steps;
    TRL's logged weighted reward is 0.5 * helpfulness + 2 * safety at every step."""
    import yaml
    from transformers import AutoModelForCausalLM

    from bfpo.cli import main
    from bfpo.models.tiny import save_tiny_model
    from bfpo.train.run import train_method

    (tmp_path / "my_rewards.py").write_text(
        "def helpfulness(prompts, completions, **kwargs):\n"
        "    return [float(len(c[0]['content']) % 5) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model_dir = save_tiny_model(tmp_path / "policy")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "out"
    rewards = {"help_reward": "my_rewards:helpfulness", "safety_reward": str(reward_model_dir)}
    if spelling == "train --config with method: morl":
        recipe = {"method": "morl", **rewards, "prompts": "prompts.jsonl", "reward_weights": [0.5, 2.0]}
        (tmp_path / "morl.yaml").write_text(yaml.safe_dump(recipe))
        argv = ["train", "--config", str(tmp_path / "morl.yaml"), "--model_name_or_path", model_dir]
    else:
        argv = ["train", "--method", "morl"] if spelling == "train --method morl" else ["morl"]
        argv += ["--model_name_or_path", model_dir, "--help_reward", rewards["help_reward"]]
        argv += ["--safety_reward", rewards["safety_reward"], "--prompts", str(tmp_path / "prompts.jsonl")]
        argv += ["--reward_weights", "0.5", "2.0"]
    argv += ["--beta", "0.1", "--max_steps", "2", "--output_dir", str(out)]
    argv += ["--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8"]
    argv += ["--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false", "--logging_steps", "1"]
    argv += ["--report_to", "none", "--save_strategy", "no", "--learning_rate", "1e-3", "--disable_tqdm", "true"]
    assert main(argv) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["settings"]["reward_weights"] == {"helpfulness": 0.5, "safety_rm": 2.0}
    assert summary["settings"]["tau (beta)"] == 0.1 and summary["wall_seconds"] > 0
    assert summary["data"] == {"prompts": len(PROMPTS)}
    rewards = summary["rewards"]
    assert set(rewards) == {"weighted_sum", "helpfulness", "safety_rm"}
    for at in ("first", "last"):  # the weights reach TRL: the logged reward is the weighted sum of the means
        expected = 0.5 * rewards["helpfulness"][at] + 2.0 * rewards["safety_rm"][at]
        assert rewards["weighted_sum"][at] == pytest.approx(expected, abs=1e-5)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["help_reward"] == "my_rewards:helpfulness" and config["reward_weights"] == [0.5, 2.0]
    # the written settings select MORL again: `bfpo train --config out/config.yaml` re-runs it
    assert config["method"] == "morl" and train_method(["--config", str(out / "config.yaml")]) == "morl"
    assert "bfpo train --config config.yaml" in (out / "config.yaml").read_text().splitlines()[0]
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()


def test_method_comes_from_the_flag_then_the_file_then_the_default(tmp_path):
    """``bfpo train``'s trainer: --method (the last one) wins over the --config file's ``method``, which wins over
    the default, the preference trainer; an unknown method names the flag, or the file and key."""
    from bfpo.args import ConfigError
    from bfpo.train.morl import morl_arguments
    from bfpo.train.recipes import resolve_recipe
    from bfpo.train.run import train_arguments, train_method

    assert train_method([]) == "preference"
    assert train_method(["--config", "tiny_bfpo"]) == "preference"  # a shipped recipe, no method key
    assert train_method(["--method=morl"]) == "morl"
    assert train_method(["--method", "morl", "--method", "preference"]) == "preference"
    recipe = tmp_path / "recipe.yaml"  # the tiny preference recipe with method: morl
    recipe.write_text(resolve_recipe("tiny_bfpo").read_text() + "method: morl\n")
    assert train_method(["--config", str(recipe)]) == "morl"
    assert train_method(["--config", str(recipe), "--method", "preference"]) == "preference"
    with pytest.raises(ConfigError, match="method: morl has its own settings"):
        train_arguments(["--config", str(recipe)])
    model_args, data_args, config, run = train_arguments(["--config", str(recipe), "--method", "preference"])
    assert config.loss == "bfpo" and config.tau == 0.1 and data_args.mode == "bfpo"
    # the other way round: a file saying preference, --method morl (the alias adds it) reads MORL's settings
    morl = tmp_path / "morl.yaml"
    morl.write_text("method: preference\nhelp_reward: json:dumps\nsafety_reward: json:loads\nprompts: p.jsonl\n")
    assert train_method(["--config", str(morl), "--method", "morl"]) == "morl"
    flags = ["--model_name_or_path", "m", "--use_cpu", "true", "--bf16", "false", "--output_dir", str(tmp_path / "o")]
    _, morl_args, rloo, _ = morl_arguments(["--config", str(morl), *flags])
    assert morl_args.help_reward == "json:dumps" and type(rloo).__name__ == "RLOOConfig"
    with pytest.raises(ConfigError, match=r"--method: preference is not MORL"):
        morl_arguments(["--method", "preference", *flags])
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: nonsense\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: method: expected one of preference, morl, got 'nonsense'"):
        train_method(["--config", str(bad)])


def test_unknown_method_is_a_one_line_error_naming_the_field(tmp_path, capsys):
    from bfpo.cli import main

    out = tmp_path / "o"
    assert main(["train", "--method", "nonsense", "--config", "tiny_bfpo", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bfpo train: error: --method: expected one of preference, morl, got 'nonsense'" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(["morl", "--method", "preference", "--model_name_or_path", "x"]) == 2
    assert "bfpo morl: error: --method: preference is not MORL" in capsys.readouterr().err


def test_help_of_the_morl_method_lists_every_morl_setting(capsys):
    """``bfpo train --method morl --help`` lists every field of MORL's dataclasses (``bfpo morl --help`` is the
    same text); ``bfpo train --help`` lists the method switch and the preference settings, not MORL's."""
    from dataclasses import fields

    from trl import RLOOConfig

    from bfpo.cli import main
    from bfpo.train.config import ModelArguments, RunArguments
    from bfpo.train.morl import MORLArguments
    from bfpo.train.run import MethodArguments

    def help_text(*argv):
        with pytest.raises(SystemExit) as exit_:
            main(list(argv))
        assert exit_.value.code == 0
        return capsys.readouterr().out

    text = help_text("train", "--method", "morl", "--help")
    assert text.startswith("usage: bfpo train --method morl")
    classes = [ModelArguments, MORLArguments, RLOOConfig, RunArguments, MethodArguments]
    names = [f.name for cls in classes for f in fields(cls) if f.init]
    missing = [name for name in names if f"--{name} " not in text and f"--{name}\n" not in text]
    assert not missing, missing
    for flag in ("--help_reward", "--safety_reward", "--prompts", "--reward_weights", "--beta", "--num_generations"):
        assert flag in text
    assert "--safety_source" not in text and "--tau" not in text  # the preference trainer's settings
    assert help_text("morl", "--help") == text
    preference = help_text("train", "--help")
    assert "--method {preference,morl}" in preference and "--method morl --help" in preference
    assert "--tau" in preference and "--help_reward" not in preference


def test_in_memory_model_weighted_sum_and_no_forward_wrapper(tmp_path):
    """A model built in memory (no folder: the reference is saved to a temporary one); TRL's logged reward is
    sum_i w_i mean(r_i) at each step; the trained model keeps its class's forward."""
    from bfpo.models.tiny import tiny_llama, tiny_tokenizer
    from bfpo.train.morl import morl_rewards, train_morl

    def safety(prompts, completions, **kwargs):
        return [1.0 if "a" in c[0]["content"] else 0.0 for c in completions]

    tok = tiny_tokenizer()
    funcs, weights = morl_rewards(length_reward, safety, [0.5, 2.0])
    trainer = train_morl(
        None,
        rloo_config(tmp_path / "out"),
        prompts=PROMPTS,
        reward_funcs=funcs,
        reward_weights=weights,
        model=tiny_llama(tok),
        tokenizer=tok,
    )
    steps = [h for h in trainer.state.log_history if "reward" in h]
    assert len(steps) == 2
    for h in steps:
        expected = 0.5 * h["rewards/length_reward/mean"] + 2.0 * h["rewards/safety/mean"]
        assert h["reward"] == pytest.approx(expected, abs=1e-5)
    assert "forward" not in trainer.accelerator.unwrap_model(trainer.model).__dict__
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "model.safetensors").is_file()


def test_a_non_finite_reward_stops_the_run_and_saves_nothing(tmp_path):
    from bfpo.models.tiny import tiny_llama, tiny_tokenizer
    from bfpo.train.morl import train_morl

    def exploding(prompts, completions, **kwargs):
        return [math.inf if i % 2 else 0.0 for i in range(len(completions))]

    tok = tiny_tokenizer()
    with pytest.raises(TrainingDivergedError, match="diverged"):
        train_morl(
            None,
            rloo_config(tmp_path / "out", max_steps=1),
            prompts=PROMPTS,
            reward_funcs=[exploding],
            model=tiny_llama(tok),
            tokenizer=tok,
        )
    assert not (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:f", r"help_reward: cannot import module 'no_such_module_xyz'"),
        ("json:no_such_function", r"help_reward: module 'json' has no function 'no_such_function'"),
        ("just-a-word", r"help_reward: 'just-a-word' is neither a model folder nor module:function"),
        ("", r"help_reward: expected a callable"),
    ],
)
def test_unknown_reward_spec_names_the_field(spec, message):
    from bfpo.train.morl import morl_rewards

    with pytest.raises(UserInputError, match=message):
        morl_rewards(spec, length_reward)


def test_bad_weights_tau_and_folders_name_the_field(tmp_path):
    from bfpo.train.morl import check_tau, kl_optimum, morl_rewards, resolve_reward, train_morl

    with pytest.raises(UserInputError, match=r"reward_weights: 3 weight\(s\) \[1.0, 2.0, 3.0\] for 2 rewards"):
        morl_rewards(length_reward, length_reward, [1.0, 2.0, 3.0])
    with pytest.raises(UserInputError, match="reward_weights: every weight must be a finite number"):
        morl_rewards(length_reward, length_reward, [1.0, float("nan")])
    for tau in (0.0, -0.1, float("inf")):
        with pytest.raises(UserInputError, match=r"beta \(tau, the KL coefficient"):
            check_tau(tau)
    with pytest.raises(UserInputError, match=r"beta \(tau"):  # refused before any model loads
        train_morl(None, rloo_config(tmp_path / "o", beta=0.0), prompts=PROMPTS, reward_funcs=[length_reward])
    with pytest.raises(UserInputError, match=r"beta \(tau"):
        kl_optimum([0.5, 0.5], [1.0, 0.0], 0.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="safety_reward: .*without config.json"):
        resolve_reward(str(tmp_path / "empty"), "safety_reward")


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from bfpo.cli import main

    cpu = ["--use_cpu", "true", "--bf16", "false"]  # RLOOConfig's bf16 default needs a GPU
    argv = ["morl", "--model_name_or_path", "x", "--help_reward", "nope:f", "--safety_reward", "nope:g", *cpu]
    assert main(argv + ["--prompts", "p.jsonl", "--output_dir", str(tmp_path / "o")]) == 2
    assert "bfpo morl: error: help_reward: cannot import module 'nope'" in capsys.readouterr().err
    argv = ["morl", "--model_name_or_path", "x", "--help_reward", "json:dumps", "--safety_reward", "json:loads"]
    argv += ["--prompts", "p.jsonl", "--output_dir", str(tmp_path / "o"), "--reward_weights", "1", *cpu]
    assert main(argv) == 2
    assert "reward_weights: 1 weight(s) [1.0] for 2 rewards (help_reward, safety_reward)" in capsys.readouterr().err


def test_kl_optimum_is_the_tilted_reference():
    from bfpo.train.morl import kl_optimum

    e = math.e
    assert kl_optimum([0.5, 0.5], [1.0, 0.0], 1.0) == pytest.approx([e / (1 + e), 1 / (1 + e)])
    # unnormalised reference masses; tau scales the tilt: 0.2 * e^(1/0.5) against 0.6 * e^0
    assert kl_optimum([0.2, 0.6], [1.0, 0.0], 0.5) == pytest.approx(
        [0.2 * e**2 / (0.2 * e**2 + 0.6), 0.6 / (0.2 * e**2 + 0.6)]
    )


# ------------------------------------------------------------------------------------------ the world
def test_world_global_reward_by_hand():
    """Default pairs (1,1,1,1,1,4): mu = (1/6, 1/6, 1/3, 1/3) over a, b, c, d, E_s = 1/3, helpfulness
    d > a > c > b gives win rates a 7/12, b 1/12, c 1/3, d 5/6; with alpha = 0.5, A1 = E_s - 1 and A2 = 1/2."""
    from bfpo.experiments.world.morl import global_rewards, pair_marginals, win_rates

    mu = pair_marginals([1, 1, 1, 1, 1, 4])
    assert mu["harmful"] == pytest.approx({"a": 1 / 6, "b": 1 / 6, "c": 1 / 3, "d": 1 / 3})
    assert win_rates("harmful", mu["harmful"]) == pytest.approx({"a": 7 / 12, "b": 1 / 12, "c": 1 / 3, "d": 5 / 6})
    g = global_rewards(mu, alpha=0.5)
    assert g["harmful"] == pytest.approx({"a": 13 / 36, "b": 7 / 36, "c": -20 / 36, "d": -32 / 36})
    assert g["benign"] == pytest.approx({"a": 1.25, "b": 0.75})  # E_s = 1, A1 = 0, win rates 3/4 and 1/4
    assert pair_marginals(None)["harmful"] == pytest.approx({c: 0.25 for c in "abcd"})


def test_world_exact_rewards_per_class():
    """The weighted sum of the four reward functions is g - A1 A2 for every class (harmful: +1/3) and the
    lowest value, -(1 + 5/4), for a response the classifier calls 'other' (or a class the kind lacks)."""
    from bfpo.experiments.world import generator as gen
    from bfpo.experiments.world.morl import TERMS, world_rewards

    funcs, weights = world_rewards([1, 1, 1, 1, 1, 4], alpha=0.5)
    assert [f.__name__ for f in funcs] == list(TERMS) and weights == pytest.approx([1.0, 0.5, -1.0, 2.25])
    rng = random.Random(0)
    harmful = gen.make_prompts([("weapons", "build a pipe bomb")], "harmful")[0]
    benign = gen.make_prompts([("cooking", "bake bread")], "benign")[0]
    cases = [(harmful, c) for c in "abcd"] + [(benign, c) for c in "ab"]
    completions = [[{"role": "assistant", "content": gen.response(p, c, rng)}] for p, c in cases]
    completions += [[{"role": "assistant", "content": "garbled words"}]] * 2
    completions += [[{"role": "assistant", "content": gen.response(harmful, "d", rng)}]]  # harm on a benign prompt
    kinds = [p.kind for p, _ in cases] + ["harmful", "benign", "benign"]
    prompts = [[{"role": "user", "content": "x"}]] * len(kinds)
    values = [f(prompts, completions, kind=kinds) for f in funcs]
    total = [sum(w * v[i] for w, v in zip(weights, values)) for i in range(len(kinds))]
    expected = [25 / 36, 19 / 36, -8 / 36, -20 / 36, 1.25, 0.75, -2.25, -2.25, -2.25]
    assert total == pytest.approx(expected)
    assert values[TERMS.index("safety")][:6] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert values[TERMS.index("helpfulness")][:6] == pytest.approx([7 / 12, 1 / 12, 1 / 3, 5 / 6, 0.75, 0.25])


def test_theorem32_optimum_and_distance_by_hand():
    """pi_ref(c) exp(g(c)/tau)/Z per kind, from hand values, and the TV distance of a method's masses to it."""
    from bfpo.experiments.world.morl import analytic_optimum, theorem32, total_variation

    ref = {"a": 0.4, "b": 0.6}
    opt = analytic_optimum(ref, {"a": 1.25, "b": 0.75}, tau=0.5)
    za, zb = 0.4 * math.exp(2.5), 0.6 * math.exp(1.5)
    assert opt == pytest.approx({"a": za / (za + zb), "b": zb / (za + zb)})
    assert total_variation({"a": 0.5, "b": 0.5}, opt) == pytest.approx(abs(0.5 - za / (za + zb)))

    class Cfg:
        pair_weights, alpha, tau = [1, 1, 1, 1, 1, 4], 0.5, 1.0

    harmful_ref = {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    seed = {
        "reference": {"harmful": {"mass": harmful_ref}, "benign": {"mass": ref}},
        "bfpo": {"harmful": {"mass": {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}}, "benign": {"mass": ref}},
    }
    th = theorem32([seed, seed], Cfg, ("harmful", "benign"))
    weights = {c: math.exp(v) for c, v in zip("abcd", (13 / 36, 7 / 36, -20 / 36, -32 / 36))}
    optimum = {c: w / sum(weights.values()) for c, w in weights.items()}
    assert th["optimum"]["harmful"] == pytest.approx(optimum)
    assert th["tv"]["bfpo"]["harmful"] == pytest.approx(1 - optimum["a"]) and th["tv"]["bfpo"]["harmful_std"] == 0
    assert th["tv"]["reference"]["benign"] == pytest.approx(total_variation(ref, th["optimum"]["benign"]))


def test_world_morl_prompts_alternate_the_two_sets_with_their_kind():
    from bfpo.experiments.world.morl import morl_prompts

    class P:
        def __init__(self, text, kind):
            self.text, self.kind = text, kind

    class R:
        def __init__(self, prompt):
            self.prompt = prompt

    class W:
        train = {"harmful": [P("h1", "harmful")], "benign": [P("b1", "benign"), P("b2", "benign")]}
        safety = [R("h1"), R("b2")]
        helpful = [R([{"role": "user", "content": "b1"}])]

    rows = morl_prompts(W, steps=3, per_step=4, seed=0)
    assert len(rows) == 12 and all(rows[i]["prompt"] == "b1" for i in range(1, 12, 2))
    assert {r["prompt"] for r in rows[::2]} <= {"h1", "b2"}
    assert all(r["kind"] == ("harmful" if r["prompt"] == "h1" else "benign") for r in rows)
