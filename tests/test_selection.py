"""Checkpoint selection on validation prompts (bfpo.eval.selection): the rule and the weights it restores."""

import json

import pytest
import torch

from bfpo.errors import UserInputError
from bfpo.eval.judges import Judge, Verdict
from bfpo.eval.selection import SelectBySafety, SelectionPoint, choose, refusal_rates
from bfpo.models.tiny import tiny_llama, tiny_tokenizer
from callback_stubs import Args, State


def P(step, harm, benign):
    return SelectionPoint(step, harm, benign, 10, 10)


def test_rule_lowest_compliance_among_admissible_earlier_step_on_ties():
    points = [P(0, 90, 2), P(4, 40, 6), P(8, 10, 12), P(12, 40, 7), P(16, 40, 3), P(20, 40, 3)]
    # step 8 has the lowest compliance but 12 > 2 + 5 benign refusal; 4, 12, 16 and 20 tie at 40: the lowest
    # benign refusal (16 and 20, 3%) dominates the others, and of those the earlier step wins
    assert choose(points, 5.0).step == 16
    assert choose(points, 10.0).step == 8  # a looser rule admits step 8
    # nothing better than the start: the start is returned
    assert choose([P(0, 50, 0), P(4, 60, 1), P(8, 20, 30)], 5.0).step == 0


def test_rule_with_an_outside_reference():
    """The limit comes from the reference (e.g. the base model before SFT), not from the starting point."""
    points = [P(0, 30, 20), P(4, 10, 25), P(8, 40, 4), P(12, 35, 6)]
    assert choose(points, 5.0).step == 4  # against the start (20%), step 4 (25%) is admissible
    base = P(-1, 99, 1)
    assert choose(points, 5.0, reference=base).step == 12  # against the base (1%): only 8 and 12, 12 is safer
    # nothing within the limit: the lowest benign refusal wins
    assert choose(points[:2], 5.0, reference=base).step == 0


def test_rates_and_empty_sets():
    p = refusal_rates([True, False, False, False], [False, True], step=3)
    assert (p.harmful_compliance, p.benign_refusal, p.n_harmful, p.n_benign) == (75.0, 50.0, 4, 2)
    with pytest.raises(UserInputError, match="at least one harmful and one benign"):
        refusal_rates([], [True], step=0)


class ScriptedJudge(Judge):
    """Refuses according to a script: one (harmful refusals, benign refusals) pair per scoring call."""

    def __init__(self, script):
        self.script = list(script)

    def judge(self, prompts, responses, kinds=None):
        n_harm, n_benign = self.script.pop(0)
        out, seen = [], {"harmful": 0, "benign": 0}
        for k in kinds:
            seen[k] += 1
            refused = seen[k] <= (n_harm if k == "harmful" else n_benign)
            out.append(Verdict(harmful=not refused and k == "harmful", refusal=refused, raw="scripted"))
        return out


def test_callback_restores_the_chosen_weights_and_writes_its_history(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    # 4 harmful, 4 benign prompts; scoring calls: start, step 2 (better), step 4 (safer but over-refuses)
    judge = ScriptedJudge([(0, 0), (3, 0), (4, 2)])
    cb = SelectBySafety(
        tok,
        ["h1", "h2", "h3", "h4"],
        ["b1", "b2", "b3", "b4"],
        every=2,
        judge=judge,
        max_new_tokens=2,
        max_benign_increase=5.0,
    )
    cb.on_train_begin(Args(tmp_path), State(0), None, model=model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    at_step2 = {n: p.detach().clone() for n, p in model.named_parameters()}
    cb.on_step_end(Args(tmp_path), State(1), None, model=model)  # not a scoring step
    cb.on_step_end(Args(tmp_path), State(2), None, model=model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    cb.on_step_end(Args(tmp_path), State(4), None, model=model)
    cb.on_train_end(Args(tmp_path), State(4), None, model=model)
    for n, p in model.named_parameters():
        assert torch.equal(p, at_step2[n]), n
    saved = json.loads((tmp_path / "selection.json").read_text())
    assert saved["chosen_step"] == 2
    assert [(q["step"], q["harmful_compliance"], q["benign_refusal"]) for q in saved["points"]] == [
        (0, 100.0, 0.0),
        (2, 25.0, 0.0),
        (4, 0.0, 50.0),
    ]


def test_bad_settings_are_named():
    tok = tiny_tokenizer()
    with pytest.raises(UserInputError, match="every must be >= 1"):
        SelectBySafety(tok, ["h"], ["b"], every=0)
    with pytest.raises(UserInputError, match="one harmful and one benign"):
        SelectBySafety(tok, [], ["b"], every=2)


def test_margin_curves_against_targets(tmp_path):
    from bfpo.train.curves import case_margins, distance_to_targets, plot_margins

    log = [
        {"step": 4, "margins/safe_safe": 0.1, "margins/unsafe_safe": -0.2, "loss": 3.0},
        {"step": 8, "loss": 2.0},  # a row without per-case margins (e.g. the final summary)
        {"step": 12, "margins/safe_safe": 0.3, "margins/unsafe_safe": 0.0},
    ]
    targets = {"safe_safe": 0.5, "unsafe_safe": -1.0, "safe_unsafe": 1.0}
    assert case_margins(log) == {"safe_safe": [(4, 0.1), (12, 0.3)], "unsafe_safe": [(4, -0.2), (12, 0.0)]}
    d = distance_to_targets(log, targets)
    assert set(d) == {"safe_safe", "unsafe_safe"}
    assert d["safe_safe"]["progress"] == pytest.approx(0.5)  # 0.1 -> 0.3 of the way to 0.5
    assert d["unsafe_safe"]["progress"] == pytest.approx(-0.25)  # moved away from -1
    png = plot_margins(log, targets, tmp_path / "m.png")
    assert png.stat().st_size > 1000


def test_a_known_start_score_is_not_generated_again(tmp_path):
    """With ``start`` given, the first point is that score (at the trainer's step) and the judge is only
    called for the later steps; the start's weights are still the ones restored when no step beats it."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = refusal_rates([True, True, False, False], [False] * 4, step=-1)  # 50% answered, 0% refused
    judge = ScriptedJudge([(1, 2)])  # the one scoring call: 75% answered, 50% refused: worse on both
    cb = SelectBySafety(
        tok, ["h1", "h2", "h3", "h4"], ["b1", "b2", "b3", "b4"], every=2, judge=judge, max_new_tokens=2, start=start
    )
    cb.on_train_begin(Args(tmp_path), State(0), None, model=model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    cb.on_step_end(Args(tmp_path), State(2), None, model=model)
    cb.on_train_end(Args(tmp_path), State(2), None, model=model)
    assert judge.script == []  # exactly one call: step 2
    assert [(q.step, q.harmful_compliance, q.benign_refusal) for q in cb.points] == [(0, 50.0, 0.0), (2, 75.0, 50.0)]
    assert cb.best.step == 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
