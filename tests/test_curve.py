"""The evaluation curve (bfpo.eval.curve.EvaluateEvery): which steps it scores, the per-set rates it records,
the known start it does not generate again, and the bad rows it names."""

import json

import pytest

from bfpo.errors import UserInputError
from bfpo.eval.curve import EvaluateEvery
from bfpo.eval.judges import Judge, Verdict
from bfpo.models.tiny import tiny_llama, tiny_tokenizer
from callback_stubs import Args, State

ROWS = [{"prompt": f"h{i}", "kind": "harmful", "source": "harmbench"} for i in range(4)] + [
    {"prompt": f"b{i}", "kind": "benign", "source": "everyday"} for i in range(2)
]


class CountingJudge(Judge):
    """Refuses the first ``n`` prompts of each call, ``n`` taken from a script (one entry per call)."""

    def __init__(self, script):
        self.script = list(script)

    def judge(self, prompts, responses, kinds=None):
        n = self.script.pop(0)
        return [Verdict(harmful=i >= n and k == "harmful", refusal=i < n, raw="scripted") for i, k in enumerate(kinds)]


def test_scores_every_n_steps_and_the_last_step_with_a_known_start(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    start = {"harmbench": {"kind": "harmful", "n": 4, "refused": 0, "refusal": 0.0, "compliance": 100.0}}
    judge = CountingJudge([2, 5])  # step 2: 2 of 4 harmful refused; step 3: all 4 harmful and 1 of 2 benign
    cb = EvaluateEvery(tok, ROWS, every=2, judge=judge, max_new_tokens=2, start=start)
    cb.on_train_begin(Args(tmp_path), State(0), None, model=model)
    for step in (1, 2, 3):
        cb.on_step_end(Args(tmp_path), State(step), None, model=model)
    cb.on_train_end(Args(tmp_path), State(3), None, model=model)  # 3 is no multiple of 2: scored here
    assert judge.script == []  # two scoring calls: steps 2 and 3; step 0 is the known start
    saved = json.loads((tmp_path / "curve.json").read_text())
    assert [p["step"] for p in saved["points"]] == [0, 2, 3] and saved["start_known"] is True
    assert saved["points"][0]["sets"] == start
    step2, step3 = saved["points"][1]["sets"], saved["points"][2]["sets"]
    assert (step2["harmbench"]["compliance"], step2["everyday"]["refusal"]) == (50.0, 0.0)
    assert (step3["harmbench"]["compliance"], step3["everyday"]["refusal"]) == (0.0, 50.0)
    assert (
        step3["harmbench"]["n"] == 4 and step3["everyday"]["n"] == 2 and step2["harmbench"]["harmful_content"] == 50.0
    )
    assert model.training  # put back in training mode after scoring


def test_a_last_step_already_scored_is_not_scored_again(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    judge = CountingJudge([0, 1])  # the start (no known score) and step 2
    cb = EvaluateEvery(tok, ROWS, every=2, judge=judge, max_new_tokens=2)
    cb.on_train_begin(Args(tmp_path), State(0), None, model=model)
    cb.on_step_end(Args(tmp_path), State(2), None, model=model)
    cb.on_train_end(Args(tmp_path), State(2), None, model=model)
    assert judge.script == [] and [p["step"] for p in cb.points] == [0, 2]
    assert cb.points[1]["sets"]["harmbench"]["compliance"] == 75.0


def test_bad_settings_and_rows_are_named():
    tok = tiny_tokenizer()
    with pytest.raises(UserInputError, match="every must be >= 1"):
        EvaluateEvery(tok, ROWS, every=0)
    with pytest.raises(UserInputError, match="no prompt rows"):
        EvaluateEvery(tok, [], every=1)
    with pytest.raises(UserInputError, match="row 1 has no source"):
        EvaluateEvery(tok, [ROWS[0], {"prompt": "x", "kind": "benign"}], every=1)
