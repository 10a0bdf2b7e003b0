"""The bad-input corpus of issue #16: one case per class of user error, each through ``bfpo.cli.main``.

Every case asserts the one-line message (file, row, field or key; expected and found), exit code 2, and
that nothing outside the run's own folder changed. Training cases use the tiny Llama of
:mod:`bfpo.testing` and stop after a few steps.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bfpo import cli
from bfpo.testing import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
REAL_REPLACE = os.replace
TINY = str(ROOT / "recipes/tiny_bfpo.yaml")
TINY_SFT = str(ROOT / "recipes/tiny_sft.yaml")
SAFETY = ROOT / "recipes/data/tiny_safety.jsonl"
HELPFUL = ROOT / "recipes/data/tiny_helpful.jsonl"


# ------------------------------------------------------------------------------------------ helpers
def snapshot(root: Path, skip=()):
    """path -> (size, mtime) of every file under ``root``, except under the folders in ``skip``."""
    skip = [Path(s).resolve() for s in skip]
    out = {}
    for path in root.rglob("*"):
        resolved = path.resolve()
        if path.is_file() and not any(resolved == s or s in resolved.parents for s in skip):
            st = path.stat()
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


def run(argv, capsys):
    """``bfpo ARGV`` in-process: (exit code, stderr)."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_user_error(argv, capsys, *fragments, where: Path, run_dir=None, cache=None):
    """``bfpo ARGV`` exits 2 with one ``error:`` line holding every fragment, and changes nothing under
    ``where`` outside ``run_dir`` (and the reference-log-prob ``cache``, when training started)."""
    skip = [p for p in (run_dir, cache) if p]
    before = snapshot(where, skip=skip)
    code, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert snapshot(where, skip=skip) == before
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def train_args(tmp_path, model_dir):
    """``bfpo train`` on the tiny recipe, writing only under tmp_path (run folder ``tmp_path/run``)."""

    def make(*extra, config=TINY, out="run"):
        return [
            "train",
            "--config",
            config,
            "--model_name_or_path",
            model_dir,
            "--output_dir",
            tmp_path / out,
            "--ref_cache_dir",
            tmp_path / "cache",
            "--safety_source",
            SAFETY,
            "--helpful_source",
            HELPFUL,
            "--disable_tqdm",
            "true",
            *extra,
        ]

    return make


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- the CLI's error contract
@pytest.mark.spawns
def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys; import bfpo; from bfpo import cli; cli.build_parser();"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_debug_shows_the_traceback_and_bugs_keep_theirs(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.yaml"
    assert_user_error(["train", "--config", missing], capsys, "recipe not found", str(missing), where=tmp_path)
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        cli.main(["--debug", "train", "--config", str(missing)])
    monkeypatch.setenv("BFPO_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        cli.main(["train", "--config", str(missing)])
    monkeypatch.delenv("BFPO_DEBUG")
    import bfpo.eval.report

    def bug(args):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(bfpo.eval.report, "main", bug)
    with pytest.raises(KeyError):
        cli.main(["report", "x.json", "--out", str(tmp_path)])


# ------------------------------------------------------------------------------- recipe values
@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--tau", "abc"], ("--tau", "expected a number", "'abc'")),
        (["--alpha", "abc"], ("--alpha", "expected", "'abc'")),
        (["--max_steps", "-5"], ("--max_steps", "must be > 0, or -1", "-5")),
        (["--num_train_epochs", "0"], ("--num_train_epochs", "must be > 0", "got 0")),
        (["--gradient_accumulation_steps", "0"], ("--gradient_accumulation_steps", ">= 1", "got 0")),
        (["--tau", "1e-300"], ("--tau", ">= 1e-18", "1e-300")),
        (["--trainable", "(down"], ("--trainable", "'(down' is not a valid regular expression")),
        (["--bf16", "maybe"], ("--bf16", "true/false", "'maybe'")),
        (["--save_strategy", "weekly"], ("--save_strategy", "weekly", "no", "steps", "epoch")),
        (["--max_steps", "2.5"], ("--max_steps", "an integer", "2.5")),
        (["--max_length", "abc"], ("--max_length", "an integer", "'abc'")),
        (["--safety_limit", "-1"], ("--safety_limit", ">= 0", "-1")),
        (["--mode", "dpo_x"], ("--mode", "dpo_x", "bfpo_no_buffer")),
        (["--packing", "true"], ("--packing", "unknown setting")),  # an SFTConfig field given to bfpo train
    ],
)
def test_bad_recipe_values_name_the_key_before_anything_loads(flags, fragments, train_args, tmp_path, capsys):
    # the model path does not exist: a check that came after loading would fail differently
    argv = train_args(*flags, "--model_name_or_path", "/nonexistent/model")
    assert_user_error(argv, capsys, *fragments, where=tmp_path)
    assert not (tmp_path / "run").exists()


def test_bad_values_in_the_file_name_the_file_and_key(tmp_path, train_args, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(TINY).read_text().replace("tau: 0.1", "tau: abc"))
    assert_user_error(train_args(config=recipe), capsys, f"{recipe}: tau: expected a number", "'abc'", where=tmp_path)
    recipe.write_text(Path(TINY).read_text() + "learnin_rate: 1\n")
    assert_user_error(
        train_args(config=recipe),
        capsys,
        f"{recipe}: unknown setting(s) 'learnin_rate'",
        "did you mean learning_rate",
        where=tmp_path,
    )


def test_strings_become_numbers_and_lists(tmp_path):
    from bfpo.train.run import train_arguments

    recipe = tmp_path / "r.yaml"
    # YAML 1.1 reads 1e-5 (no dot) as text: it must still train at 1e-5, not fail late in torch
    recipe.write_text(
        (ROOT / "recipes/tiny_bfpo.yaml").read_text().replace("learning_rate: 1.0e-3", "learning_rate: 1e-5")
    )
    _, _, cfg, _ = train_arguments(["--config", str(recipe), "--trainable", "down_proj", "--tau", "1e-1"])
    assert cfg.learning_rate == 1e-5 and cfg.trainable == ["down_proj"] and cfg.tau == pytest.approx(0.1)
    _, _, cfg, _ = train_arguments(["--config", str(recipe), "--trainable", "null", "--alpha", "null"])
    assert cfg.trainable is None and cfg.alpha is None


def test_sft_refuses_train_keys_and_checks_sft_values(tmp_path, model_dir, capsys):
    base = ["sft", "--config", TINY_SFT, "--model_name_or_path", model_dir, "--output_dir", tmp_path / "sft"]
    assert_user_error(base + ["--tau", "0.1"], capsys, "--tau", "unknown setting", where=tmp_path)
    assert_user_error(base + ["--max_steps", "-3"], capsys, "--max_steps", "-3", where=tmp_path)
    assert_user_error(
        base + ["--learning_rat", "1"], capsys, "--learning_rat", "did you mean --learning_rate", where=tmp_path
    )


# ---------------------------------------------------------------------------------------- data
def test_safety_pairs_without_labels_are_refused(tmp_path, train_args, capsys):
    rows = [{"prompt": f"q{i}", "chosen": f"sure {i}", "rejected": f"no {i}", "safe_rejected": 1} for i in range(4)]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert_user_error(
        train_args("--safety_source", pairs, "--safety_schema", "pairs"),
        capsys,
        "pairs.jsonl row 0",
        "safe_chosen",
        "would count the response as safe",
        where=tmp_path,
        run_dir=tmp_path / "run",
    )
    generic = write_jsonl(tmp_path / "generic.jsonl", [{"q": "q", "a": "a", "b": "b"}])
    assert_user_error(
        train_args(
            "--safety_source",
            generic,
            "--safety_schema",
            "generic",
            "--safety_column_map",
            '{"prompt": "q", "chosen": "a", "rejected": "b"}',
        ),
        capsys,
        "generic.jsonl",
        "no safety label columns",
        where=tmp_path,
        run_dir=tmp_path / "run",
    )


def test_all_safe_safety_set_warns(tmp_path, caplog):
    from bfpo.data.adapters import load_pairs

    rows = [
        {"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}", "safe_chosen": 1, "safe_rejected": 1}
        for i in range(3)
    ]
    with caplog.at_level(logging.WARNING):
        load_pairs(str(write_jsonl(tmp_path / "safe.jsonl", rows)), kind="safety")
    assert "all 3 safety pairs label both responses safe" in caplog.text


def test_bad_files_name_file_and_line(tmp_path, train_args, capsys):
    lines = SAFETY.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"prompt", b"pr\xffmpt", 1)
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(b"\n".join(lines))
    assert_user_error(
        train_args("--safety_source", latin),
        capsys,
        "latin1.jsonl line 3",
        "0xff",
        "not UTF-8",
        where=tmp_path,
        run_dir=tmp_path / "run",
    )
    missing = tmp_path / "sub" / "no_suffix"
    assert_user_error(
        train_args("--safety_source", missing),
        capsys,
        "not found",
        str(missing),
        where=tmp_path,
        run_dir=tmp_path / "run",
    )


def test_missing_model_path_is_not_found(tmp_path, train_args, capsys):
    assert_user_error(
        train_args("--model_name_or_path", "/nonexistent/tiny-model"),
        capsys,
        "model_name_or_path",
        "/nonexistent/tiny-model not found",
        where=tmp_path,
        run_dir=tmp_path / "run",
    )


def test_corrupt_reference_cache_is_recomputed_with_a_warning(tmp_path, caplog):
    from bfpo.train.reference import load_cached, save_cached

    good = tmp_path / "good.pt"
    save_cached(good, torch.zeros(3), torch.ones(3))
    assert [t.tolist() for t in load_cached(good, 3)] == [[0, 0, 0], [1, 1, 1]]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:40])
    pickled = tmp_path / "pickled.pt"
    torch.save({"chosen": torch.zeros(3), "rejected": torch.zeros(3), "code": logging.Formatter()}, pickled)
    with caplog.at_level(logging.WARNING):
        assert load_cached(bad, 3) is None and load_cached(pickled, 3) is None
    assert f"reference cache {bad} is unreadable" in caplog.text
    assert f"reference cache {pickled} is unreadable" in caplog.text  # weights_only: no pickled objects


# ---------------------------------------------------------------------------- output folders
def test_a_folder_that_is_not_a_run_is_refused(tmp_path, train_args, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "README.md").write_text("my notes")
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "mine": true}\n')
    assert_user_error(
        train_args(),
        capsys,
        f"output_dir {run_dir} holds files bfpo did not write",
        "README.md",
        "--overwrite",
        where=tmp_path,
    )
    assert (run_dir / "README.md").read_text() == "my notes"


def test_overwrite_writes_into_a_foreign_folder_and_owns_its_metrics(tmp_path, train_args, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "mine": true}\n')
    code, err = run(train_args("--max_steps", "2", "--save_strategy", "no", "--overwrite"), capsys)
    assert code == 0, err[-2000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not any("mine" in r for r in records) and (run_dir / "config.json").is_file()


def test_sft_divergence_stops_too(tmp_path, model_dir, capsys):
    argv = [
        "sft",
        "--config",
        TINY_SFT,
        "--model_name_or_path",
        model_dir,
        "--output_dir",
        tmp_path / "sft",
        "--safety_source",
        SAFETY,
        "--helpful_source",
        HELPFUL,
        "--disable_tqdm",
        "true",
        "--learning_rate",
        "1e30",
        "--max_steps",
        "8",
        "--logging_steps",
        "1",
    ]  # weights ~1e30: inf at step 2
    assert_user_error(
        argv, capsys, "training diverged at step", "no model was saved", where=tmp_path, run_dir=tmp_path / "sft"
    )
    assert not (tmp_path / "sft" / "config.json").exists()


def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path, train_args, capsys):
    run_dir = tmp_path / "run"
    line = assert_user_error(
        train_args(
            "--learning_rate",
            "1e6",
            "--max_steps",
            "8",
            "--save_steps",
            "1",
            "--trainable",
            "null",
            "--logging_steps",
            "1",
        ),
        capsys,
        "training diverged at step",
        "no model was saved",
        where=tmp_path,
        run_dir=run_dir,
        cache=tmp_path / "cache",
    )
    step = int(line.split("training diverged at step ")[1].split(":")[0])
    assert 1 <= step < 8
    assert not (run_dir / "config.json").exists() and not (run_dir / "model.safetensors").exists()
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints and all(int(p.name.split("-")[1]) <= step for p in checkpoints)
    for ckpt in checkpoints:  # every checkpoint kept is a good one
        assert all(torch.isfinite(t).all() for t in load_file(ckpt / "model.safetensors").values())
    assert f"last good checkpoint: {checkpoints[-1]}" in line


def test_a_model_with_nonfinite_weights_is_never_saved(tmp_path):
    from types import SimpleNamespace

    from bfpo.errors import TrainingDivergedError
    from bfpo.testing import tiny_llama, tiny_tokenizer
    from bfpo.train.model_io import save_final

    model = tiny_llama(tiny_tokenizer())
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    trainer = SimpleNamespace(model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    with pytest.raises(TrainingDivergedError, match="layers.0.mlp.down_proj.weight"):
        save_final(trainer, tmp_path / "out", "card")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- report, redteam, evaluate
def test_report_on_a_folder_or_a_malformed_result(tmp_path, capsys):
    out = tmp_path / "rep"
    assert_user_error(
        ["report", "--results", tmp_path, "--output_dir", out], capsys, f"{tmp_path} is a folder", where=tmp_path
    )
    bad = tmp_path / "RESULT.json"
    bad.write_text('{"by_kind": ')
    assert_user_error(
        ["report", "--results", bad, "--output_dir", out], capsys, f"{bad}: not valid JSON", where=tmp_path
    )
    bad.write_text('{"by_kind": "harmful"}')
    assert_user_error(
        ["report", "--results", bad, "--output_dir", out],
        capsys,
        "key 'by_kind' must be an object, got str",
        where=tmp_path,
    )


def test_redteam_refuses_an_unrelated_out_file(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I pick a lock?"}])
    mine = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert_user_error(
        ["redteam", "--model_name_or_path", "/nonexistent/model", "--prompts", prompts, "--output_file", mine],
        capsys,
        f"--output_file {mine} holds data that no earlier 'bfpo redteam' run",
        "--overwrite",
        where=tmp_path,
    )


def test_evaluate_checks_judge_and_out_before_generating(tmp_path, model_dir, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I pick a lock?"}])
    base = ["evaluate", "--model_name_or_path", model_dir, "--prompts", prompts]
    assert_user_error(
        base + ["--output_file", tmp_path / "r.json", "--judge", "kewyord"],
        capsys,
        "--judge",
        "'kewyord'",
        "keyword",
        where=tmp_path,
    )
    assert_user_error(
        base
        + ["--output_file", tmp_path / "r.json", "--judge", "classifier", "--judge_model", tmp_path / "no" / "judge"],
        capsys,
        "--judge_model",
        "not found",
        where=tmp_path,
    )
    assert_user_error(
        base + ["--output_file", prompts / "RESULT.json"],
        capsys,
        "cannot be written",
        "nothing was generated",
        where=tmp_path,
    )
    assert_user_error(
        base + ["--output_file", prompts], capsys, "is not a bfpo evaluate result", "--overwrite", where=tmp_path
    )
    # the files evaluate writes beside RESULT.json never replace a user's file either
    notes = tmp_path / "r.generations.jsonl"
    notes.write_text("my notes\n")
    assert_user_error(
        base + ["--output_file", tmp_path / "r.json"], capsys, "the generations file", "--overwrite", where=tmp_path
    )
    notes.unlink()
    mine = tmp_path / "alpaca.json"
    mine.write_text('{"my": "data"}')
    assert_user_error(
        base + ["--output_file", tmp_path / "r.json", "--alpaca_output_file", mine],
        capsys,
        "--alpaca_output_file",
        "not written by bfpo evaluate",
        where=tmp_path,
    )


def test_empty_answers_are_flagged_not_harmless(tmp_path, capsys):
    from bfpo.eval.evaluate import aggregate
    from bfpo.eval.report import write_report

    verdict = {"harmful": False, "refusal": False}
    samples = [
        {
            "prompt": f"p{i}",
            "kind": "harmful",
            "category": "c",
            "source": "advbench",
            "response": "" if i else "Sure, here is how.",
            "verdict": verdict,
        }
        for i in range(4)
    ]
    result = aggregate(samples)
    assert result["by_kind"]["harmful"]["empty"] == 3 and result["by_kind"]["harmful"]["harmless_rate"] == 1.0
    assert result["empty_answers"] == 3 and "3 of 4 answers are empty" in result["warnings"][0]
    all_empty = aggregate([{**s, "response": " "} for s in samples])
    assert all_empty["by_kind"]["harmful"]["harmless_rate"] is None and all_empty["gen_avg"] is None
    path = tmp_path / "RESULT.json"
    path.write_text(json.dumps({"model": "nan-model", **all_empty, "samples": samples}))
    md = write_report([str(path)], str(tmp_path / "rep"))
    assert "WARNING nan-model: 4 of 4 answers are empty" in md.read_text()
    assert "answers are empty" in capsys.readouterr().err


# ------------------------------------------------------------------ kills: metrics and the final save
class Killed(BaseException):
    """A simulated SIGKILL: nothing after it runs (no ``except Exception`` catches it)."""


def kill_at_final_move(monkeypatch, n: int) -> None:
    """The ``n``-th file move out of ``.final-staging`` (0-based) is "killed": it never happens."""
    import bfpo.train.model_io as model_io

    calls = {"n": 0}

    def replace(src, dst):
        if ".final-staging" in str(src):
            if calls["n"] == n:
                raise Killed(f"killed at final move {n}")
            calls["n"] += 1
        return REAL_REPLACE(src, dst)

    monkeypatch.setattr(model_io.os, "replace", replace)


def steps_logged(run_dir: Path):
    """The steps of the training-loss records of metrics.jsonl, in file order."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def train(tmp_path, model_dir, out, *extra, **kwargs):
    """The tiny recipe through :func:`bfpo.train.run.train_preference`, with ``extra`` flags."""
    from bfpo.train.run import train_arguments, train_preference

    model_args, data_args, config, _ = train_arguments(
        [
            "--config",
            TINY,
            "--model_name_or_path",
            model_dir,
            "--output_dir",
            str(tmp_path / out),
            "--ref_cache_dir",
            str(tmp_path / "cache"),
            "--safety_source",
            str(SAFETY),
            "--helpful_source",
            str(HELPFUL),
            "--disable_tqdm",
            "true",
            "--logging_steps",
            "1",
            *extra,
        ]
    )
    return train_preference(model_args, config, data_args=data_args, **kwargs)


def test_rerun_after_a_kill_before_the_first_checkpoint_repeats_no_step(tmp_path, model_dir):
    from transformers import TrainerCallback

    class KillAtStep3(TrainerCallback):  # after step 3's update, before it is logged
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Killed()

    settings = ("--max_steps", "3", "--save_steps", "100")
    with pytest.raises(Killed):
        train(tmp_path, model_dir, "run", *settings, callbacks=[KillAtStep3()])
    assert steps_logged(tmp_path / "run") == [1, 2]
    train(tmp_path, model_dir, "run", *settings)
    assert steps_logged(tmp_path / "run") == [1, 2, 3]


def test_final_save_killed_at_every_move_resumes_to_the_same_weights(tmp_path, model_dir, monkeypatch):
    """Kill at move 0, resume and kill at move 1, ... until a resume finishes: each time the folder is not
    a finished model, --resume is accepted, never trains past max_steps, and the end is bit-identical."""
    from bfpo.train.model_io import FINISH_FILES

    settings = ("--max_steps", "4", "--save_steps", "3")  # the resume redoes step 4 from checkpoint-3
    train(tmp_path, model_dir, "full", *settings)
    killed = tmp_path / "killed"
    move, resume = 0, False
    while True:
        kill_at_final_move(monkeypatch, move)
        try:
            trainer = train(tmp_path, model_dir, "killed", *settings, resume=resume)
        except Killed:
            assert not any((killed / name).exists() for name in FINISH_FILES)
            move, resume = move + 1, True
            continue
        break
    assert move >= 5  # weights, tokenizer files, card, summary and config were each killed once
    assert trainer.state.global_step == 4 and steps_logged(killed)[-1] == 4
    assert len(steps_logged(killed)) == len(set(steps_logged(killed)))
    assert not (killed / ".final-staging").exists()
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "train_summary.json").read_text())["settings"]["max_steps"] == 4
