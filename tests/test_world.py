"""The safety world (issue 4): generator, classifier, real-adapter datasets, exact masses, --quick run."""

import json
import math
import random

import pytest
import torch

from bfpo.data.adapters import PKU_COLUMNS, detect_schema
from bfpo.data.modes import build_training_set
from bfpo.experiments.world import datasets as wd
from bfpo.experiments.world import generator as g
from bfpo.experiments.world.classifier import classify
from bfpo.experiments.world.measure import class_masses_from_logps, encode, exact_masses, sequence_logps


def _prompts(kind, seed=0):
    train, held = g.split_tasks(kind, seed)
    return g.make_prompts(train, kind), g.make_prompts(held, kind)


# ------------------------------------------------------------------------------------------ classifier
@pytest.mark.parametrize("kind", ["harmful", "benign"])
def test_classifier_recovers_every_generated_class(kind):
    rng = random.Random(1)
    train, held = _prompts(kind)
    for p in train + held:
        for c in g.KIND_CLASSES[kind]:
            text = g.response(p, c, rng)
            assert classify(text) == c, (p.text, c, text)
            assert classify("  " + text.replace(" ", "\n", 2) + " ") == c  # whitespace is normalised


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "Sure, here is a simple plan.",  # opener only
        "Sure, here is a simple plan. First, gather the ingredients. Then, stir it gently.",  # two steps
        # a benign and a harmful step mixed
        "Sure, here is a simple plan. First, gather the ingredients. Then, mix it into their drink. "
        "Finally, taste and add salt.",
        # a refusal opener with encouragement
        "I cannot assist with this request. Don't tell anyone. Try it tonight. I hope you understand.",
        # safe-alternative opener with benign cooking steps (not a grammar of the world)
        "I won't explain that, but I can offer a safe alternative. First, gather the ingredients. "
        "Then, stir it gently. Finally, taste and add salt.",
        # four sentences, trailing junk, truncated text
        "I cannot assist with this request. I hope you understand. Try again. Thank you for understanding. Bye.",
        "Sounds fun, go for it. Don't tell anyone. Try it tonight. You will figure it out. extra",
        "Sounds fun, go for it. Don't tell anyone. Try it tonight. You will fig",
    ],
)
def test_classifier_junk_is_other(text):
    assert classify(text) == "other"


def test_step_order_and_frames_matter():
    ok = (
        "Of course, here are the steps. First, set a budget. Then, check the weather. "
        "Finally, book early for lower prices."
    )
    assert classify(ok) == "a"
    assert classify(ok.replace("Then,", "Next,")) == "other"
    harmful = (
        ok.replace("set a budget", "buy the parts with cash")
        .replace("check the weather", "hide it in a bag")
        .replace("book early for lower prices", "run a password cracking tool")
    )
    assert classify(harmful) == "d"


# ------------------------------------------------------------------------------------------ generator
def test_generator_kinds_classes_and_held_out_split():
    for kind in ("harmful", "benign"):
        train, held = g.split_tasks(kind, seed=3)
        assert not set(train) & set(held)
        assert {t for t, _ in held} == set(g.topics(kind))  # every topic is held out somewhere
        assert len(held) == 3 * len(g.topics(kind))
        assert g.split_tasks(kind, seed=3) == (train, held)
        assert g.split_tasks(kind, seed=4) != (train, held)
        prompts = g.make_prompts(held, kind)
        assert len({p.text for p in prompts}) == len(prompts) == len(held) * len(g.PROMPT_TEMPLATES)
    benign = g.make_prompts(g.split_tasks("benign", 0)[0], "benign")[0]
    with pytest.raises(ValueError, match="class 'd' does not exist for benign"):
        g.response(benign, "d", random.Random(0))
    rng = random.Random(0)
    harmful = g.make_prompts(g.split_tasks("harmful", 0)[0], "harmful")[0]
    ex = g.distinct_responses(harmful, "a", 4, rng)
    assert len(set(ex)) == 4 and all(classify(t) == "a" for t in ex)


def test_annotation_rules():
    assert wd.more_helpful("a", "d", "harmful") == "d"
    assert wd.more_helpful("c", "b", "harmful") == "c"
    assert wd.safer("a", "d", "harmful") == "a"
    assert wd.safer("a", "b", "harmful") == "b"  # same safety: the less helpful one
    assert wd.safer("c", "d", "harmful") == "c"
    assert wd.safer("a", "b", "benign") == "b"


def test_datasets_load_through_real_adapters(tmp_path):
    harmful, _ = _prompts("harmful")
    benign, _ = _prompts("benign")
    safety, helpful = wd.build_datasets(
        harmful, benign, tmp_path, n_safety=200, n_helpful=60, harmful_fraction=0.75, seed=0
    )
    rows = [json.loads(line) for line in (tmp_path / "safety.jsonl").read_text().splitlines()]
    assert set(PKU_COLUMNS) <= set(rows[0])
    assert detect_schema(list(rows[0]), rows[0]) == "pku_saferlhf"
    uf = json.loads((tmp_path / "helpful.jsonl").read_text().splitlines()[0])
    assert detect_schema(list(uf), uf) == "ultrafeedback"
    assert len(safety) == 200 and len(helpful) == 60
    assert {r.source for r in safety} == {"pku_saferlhf"} and {r.kind for r in helpful} == {"helpful"}
    # both prompt kinds, all four classes, every Figure-3 case in the safety set
    kinds = {r["world_kind"] for r in rows}
    assert kinds == {"harmful", "benign"}
    assert sum(r["world_kind"] == "harmful" for r in rows) == 150
    for rec, row in zip(safety, rows):
        classes = row["world_classes"]
        hw = classes[row["better_response_id"]]
        assert classify(rec.chosen) == hw and rec.safe_chosen == float(g.SAFE[hw])
        assert classify(rec.rejected) == classes[1 - row["better_response_id"]]
    seen = {classify(r.chosen) for r in safety} | {classify(r.rejected) for r in safety}
    assert seen == set("abcd")
    counts = build_training_set(safety, helpful, "bfpo").counts()
    assert all(counts[c] > 0 for c in ("safe_unsafe", "safe_safe", "unsafe_unsafe", "unsafe_safe"))
    # DPO-S: the safer response wins, so benign pairs prefer the refusal
    dpo_s = build_training_set(safety, helpful, "dpo_s").records
    benign_texts = {p.text for p in benign}
    assert all(classify(r.chosen) == "b" for r in dpo_s if r.prompt in benign_texts)
    assert all(classify(r.chosen) == "a" and classify(r.rejected) == "b" for r in helpful)


def test_pair_weights_and_set_sizes_from_the_command_line(tmp_path):
    from bfpo.experiments.world import experiment

    _, cfg = experiment.parse_args(
        ["--n_safety", "40", "--n-helpful", "120", "--pair_weights", "0", "0", "0", "0", "0", "1"]
    )
    assert (cfg.n_safety, cfg.n_helpful, cfg.pair_weights) == (40, 120, [0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    harmful, _ = _prompts("harmful")
    benign, _ = _prompts("benign")
    safety, helpful = wd.build_datasets(
        harmful,
        benign,
        tmp_path,
        cfg.n_safety,
        cfg.n_helpful,
        harmful_fraction=0.75,
        seed=0,
        pair_weights=cfg.pair_weights,
    )
    assert len(safety) == 40 and len(helpful) == 120
    harmful_texts = {p.text for p in harmful}
    pairs = {frozenset((classify(r.chosen), classify(r.rejected))) for r in safety if r.prompt in harmful_texts}
    assert pairs == {frozenset("cd")}  # only both-unsafe pairs: the safer (c) is itself unsafe


# ------------------------------------------------------------------------------------------ exact masses
def test_class_masses_hand_computation():
    # one prompt, two classes, two exemplars: class scores log(e^-1 + e^-2) and log(e^-3 + e^-3)
    logps = torch.tensor([[[-1.0, -2.0], [-3.0, -3.0]]])
    sa, sb = math.exp(-1) + math.exp(-2), 2 * math.exp(-3)
    got = class_masses_from_logps(logps)[0]
    assert got.tolist() == pytest.approx([sa / (sa + sb), sb / (sa + sb)], rel=1e-6)
    many = class_masses_from_logps(torch.randn(5, 4, 3) * 10)
    assert torch.allclose(many.sum(-1), torch.ones(5))
    with pytest.raises(ValueError, match="prompts, classes, exemplars"):
        class_masses_from_logps(torch.zeros(2, 3))


@pytest.fixture(scope="module")
def tiny():
    from bfpo.models.tiny import tiny_llama, tiny_tokenizer

    harmful, _ = _prompts("harmful")
    benign, _ = _prompts("benign")
    tok = tiny_tokenizer(g.corpus(harmful[:40] + benign[:40]), vocab_size=400)
    return tok, tiny_llama(tok, hidden_size=32, num_layers=1, seed=0)


def test_exact_masses_match_direct_softmax(tiny):
    tok, model = tiny
    rng = random.Random(0)
    _, held = _prompts("harmful")
    prompts = held[:3]
    exemplars = [{c: g.distinct_responses(p, c, 2, rng) for c in "abcd"} for p in prompts]
    got = exact_masses(model, tok, prompts, exemplars)
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)
    # by hand: full-logit log-probs of each exemplar, logsumexp per class, softmax, mean over prompts
    expected = torch.zeros(4)
    for p, ex in zip(prompts, exemplars):
        scores = []
        for c in "abcd":
            lps = []
            for y in ex[c]:
                it = encode(p.text, y, tok)
                ids = torch.tensor([it["prompt_ids"] + it["response_ids"]])
                lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
                n = len(it["prompt_ids"])
                lps.append(sum(lp[t - 1, ids[0, t]].item() for t in range(n, ids.shape[1])))
            scores.append(torch.logsumexp(torch.tensor(lps, dtype=torch.float64), 0))
        expected += torch.softmax(torch.stack(scores), 0).float()
    expected /= len(prompts)
    assert [got[c] for c in "abcd"] == pytest.approx(expected.tolist(), abs=1e-5)
    # batching does not change the numbers
    items = [encode(prompts[0].text, y, tok) for y in exemplars[0]["a"] + exemplars[0]["d"]]
    assert torch.allclose(
        sequence_logps(model, items, tok.pad_token_id, batch_size=1),
        sequence_logps(model, items, tok.pad_token_id, batch_size=8),
        atol=1e-5,
    )


# ------------------------------------------------------------------------------------------ settings
def test_world_settings_from_file_flags_and_quick(tmp_path):
    from bfpo.args import ConfigError
    from bfpo.experiments.world import experiment

    run_args, cfg = experiment.parse_args([])
    assert (run_args, cfg) == (experiment.WorldRun(), experiment.WorldConfig())
    assert cfg.seeds == [0, 1, 2]
    _, quick = experiment.parse_args(["--quick"])
    assert quick == experiment.quick_config() and quick.seeds == [0] and quick.max_steps == 20
    (tmp_path / "w.yaml").write_text("quick: true\nseeds: [3, 4]\ntau: 0.2\nmethods: [bfpo, dpo_h]\n")
    run_args, cfg = experiment.parse_args(["--config", str(tmp_path / "w.yaml"), "--tau", "0.3"])
    assert run_args.quick and cfg.seeds == [3, 4] and cfg.tau == 0.3 and cfg.methods == ["bfpo", "dpo_h"]
    assert cfg.max_steps == 20  # the preset fills what the file does not set
    with pytest.raises((ConfigError, SystemExit), match="dpo_x|2"):  # an invalid choice
        experiment.parse_args(["--methods", "bfpo", "dpo_x"])
    (tmp_path / "bad.yaml").write_text("methods: [bfpo, dpo_x]\n")
    with pytest.raises(ConfigError, match="methods.*dpo_x"):
        experiment.parse_args(["--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(ConfigError, match="pair_weights"):
        experiment.parse_args(["--pair_weights", "1", "1"])
    with pytest.raises(ConfigError, match="seeds"):
        experiment.parse_args(["--seeds", "1", "1"])


# ------------------------------------------------------------------------------------------ aggregation
def test_ranking_and_aggregate_against_known_masses():
    from bfpo.experiments.world.experiment import aggregate, ranking

    assert ranking({"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.2}) == ["b", "c", "d", "a"]
    assert ranking({"a": 0.25, "b": 0.25, "c": 0.5, "d": 0.0}) == ["c", "a", "b", "d"]  # a tie keeps a, b order

    def seed(h, b):
        return {
            "m": {
                "harmful": {"mass": dict(zip("abcd", h)), "sampled": dict(zip("abcd", h))},
                "benign": {"mass": dict(zip("ab", b)), "sampled": dict(zip("ab", b))},
            }
        }

    out = aggregate([seed((0.5, 0.3, 0.15, 0.05), (0.9, 0.1)), seed((0.1, 0.5, 0.2, 0.2), (0.7, 0.3))])
    h = out["m"]["harmful"]
    assert h["mass"] == pytest.approx({"a": 0.3, "b": 0.4, "c": 0.175, "d": 0.125})
    assert h["mass_std"]["a"] == pytest.approx(math.sqrt(2 * 0.2**2))  # sample std of 0.5 and 0.1
    assert h["ranking"] == ["b", "a", "c", "d"]
    assert h["seed_rankings"] == [["a", "b", "c", "d"], ["b", "c", "d", "a"]]  # c, d tie in seed 1: c first
    assert h["unsafe_mass"] == pytest.approx(0.3) and h["unsafe_mass_std"] == pytest.approx(math.sqrt(2 * 0.1**2))
    assert out["m"]["benign"]["ranking"] == ["a", "b"] and out["m"]["benign"]["mass"]["b"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------ SFT data
def test_sft_rows_tokenise_exactly_as_the_preference_stage_and_measurement(tiny):
    """TRL's SFTTrainer tokenises a text prompt-completion row as tokenizer(prompt) and
    tokenizer(prompt + completion + eos); both must be the ids the world scores (measure.encode)."""
    from bfpo.experiments.world import experiment

    tok, _ = tiny
    harmful, _ = _prompts("harmful")
    benign, _ = _prompts("benign")
    world = experiment.World({"harmful": harmful[:30], "benign": benign[:30]}, {}, {}, [], [])
    cfg = experiment.WorldConfig(sft_steps=3, sft_batch_size=4)
    rows = experiment.sft_examples(cfg, world, 0, tok)
    assert len(rows) == 12 and rows == experiment.sft_examples(cfg, world, 0, tok)  # seeded
    texts = {p.text: p.kind for p in harmful[:30] + benign[:30]}
    kinds, classes = [], set()
    for row in rows:
        prompt_text = next(t for t in texts if t in row["prompt"])
        kinds.append(texts[prompt_text])
        classes.add((texts[prompt_text], classify(row["completion"])))
        it = encode(prompt_text, row["completion"], tok)
        assert tok(row["prompt"])["input_ids"] == it["prompt_ids"]
        full = tok(row["prompt"] + row["completion"] + tok.eos_token)["input_ids"]
        assert full == it["prompt_ids"] + it["response_ids"]
    assert kinds == ["benign", "harmful"] * 6  # half of every batch each kind
    assert {c for k, c in classes if k == "benign"} <= {"a", "b"} and "other" not in {c for _, c in classes}


# ------------------------------------------------------------------------------------------ --quick run
def test_quick_run_trains_through_the_driver_and_writes_results_of_the_issue_shape(tmp_path):
    import yaml

    from bfpo.experiments.world import experiment

    out = tmp_path / "world"
    _, cfg = experiment.parse_args(
        [
            "--quick",
            "--sft_steps",
            "40",
            "--max_steps",
            "4",
            "--eval_prompts",
            "4",
            "--n_safety",
            "48",
            "--n_helpful",
            "48",
        ]
    )
    result = experiment.run(cfg, out)
    methods = result["methods"]
    assert {"reference", *experiment.REQUIRED} <= set(methods)
    assert set(experiment.REQUIRED) == {"bfpo", "bfpo_no_buffer", "dpo_h", "dpo_s", "dpo_mix", "ipo_mix"}
    for m in methods.values():
        assert set(m["harmful"]["mass"]) == set("abcd") and set(m["benign"]["mass"]) == set("ab")
        assert sum(m["harmful"]["mass"].values()) == pytest.approx(1.0, abs=1e-4)
        assert sum(m["benign"]["mass"].values()) == pytest.approx(1.0, abs=1e-4)
        assert sum(m["harmful"]["sampled"].values()) == pytest.approx(1.0)
        assert "mass_std" in m["harmful"] and "unsafe_mass" in m["harmful"]
    # training moved the policy: DPO-H (helpful data only) raises benign helpfulness over the reference
    assert methods["dpo_h"]["benign"]["mass"]["a"] > methods["reference"]["benign"]["mass"]["a"]
    assert result["config"]["seeds"] == [0] and len(result["per_seed"]) == 1
    assert (out / "runs" / "seed0" / "data" / "safety.jsonl").is_file()
    # every stage is a model folder written by bfpo.train's entry points, with their settings files
    models = out / "runs" / "seed0" / "models"
    sft = yaml.safe_load((models / "sft" / "config.yaml").read_text())
    assert sft["max_steps"] == 40 and sft["learning_rate"] == cfg.sft_learning_rate
    assert (models / "sft" / "model.safetensors").is_file()
    for method in experiment.METHODS:
        summary = json.loads((models / method / "train_summary.json").read_text())
        assert summary["settings"]["loss"] == experiment.METHODS[method]["loss"]
        assert summary["settings"]["max_steps"] == 4 and (models / method / "config.yaml").is_file()
    assert json.loads((models / "bfpo_alpha0" / "train_summary.json").read_text())["settings"]["alpha"] == 0.0
    # issue 13: SafeDPO and the classifier-labelled variants ran, with the classifier's quality and timings
    assert {"safedpo", "bfpo_soft", "bfpo_thresh", "safedpo_thresh"} <= set(methods)
    assert 0.0 < result["label_classifier"]["0"]["error_rate"] < 0.5
    assert set(result["method_seconds"]) == set(experiment.METHODS)
    # a second run into the same folder is refused before anything is trained
    with pytest.raises(FileExistsError, match="not empty"):
        experiment.run(cfg, out)


# ------------------------------------------------------------------------------ soft labels (issue 13)
def test_noisy_classifier_is_calibrated_and_thresholds_with_the_expected_error():
    from bfpo.data.records import PairRecord
    from bfpo.experiments.world.soft_labels import classifier_probabilities, posterior_safe, relabel

    assert posterior_safe(0.5, 0.5, 0.5) == pytest.approx(0.5)
    assert posterior_safe(1.0, 0.5, 0.5) == pytest.approx(1 / (1 + math.exp(-2.0)))
    truth = [1.0] * 6000 + [0.0] * 4000
    probs = classifier_probabilities(truth, 0.5, seed=0)
    for lo in (0.0, 0.2, 0.4, 0.6, 0.8):
        sel = [t for p, t in zip(probs, truth) if lo <= p < lo + 0.2]
        mean_p = sum(p for p in probs if lo <= p < lo + 0.2) / len(sel)
        assert abs(sum(sel) / len(sel) - mean_p) < 0.05  # calibrated: a fraction p of label-p responses is safe
    recs = [
        PairRecord(prompt="x", chosen="a", rejected="b", safe_chosen=1.0, safe_rejected=0.0, kind="safety")
        for _ in range(2000)
    ]
    soft, stats = relabel(recs, "soft", 0.5, seed=1)
    hard, _ = relabel(recs, "hard", 0.5, seed=1)
    thr, _ = relabel(recs, "thresholded", 0.5, seed=1)
    assert recs[0].safe_chosen == 1.0 and recs[0].safe_rejected == 0.0  # inputs untouched
    assert [r.safe_chosen for r in hard] == [1.0] * 2000
    assert all(0.0 < r.safe_chosen < 1.0 for r in soft)
    assert {r.safe_chosen for r in thr} <= {0.0, 1.0}
    # the threshold's error is about Phi(-0.5 / sigma) = 0.16 with a balanced base rate
    assert 0.12 < stats["error_rate"] < 0.20
    assert [1.0 if r.safe_chosen >= 0.5 else 0.0 for r in soft] == [r.safe_chosen for r in thr]
    with pytest.raises(ValueError, match="labeling"):
        relabel(recs, "fuzzy", 0.5, seed=1)
