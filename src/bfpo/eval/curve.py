"""A model's path through the safety-helpfulness trade-off during training, on the sets a result is reported on.

:class:`EvaluateEvery` is a ``TrainerCallback`` for any ``transformers.Trainer``. Every ``every`` steps (and
at the last step) it answers a fixed set of prompt rows greedily, exactly as ``bfpo evaluate`` does, judges
each answer, and records the rates per prompt set (:func:`bfpo.eval.evaluate.set_rates`). It only watches:
it chooses nothing and never changes the weights, so it may score the evaluation sets themselves. That is
what a trade-off curve needs, one point per step on the reported sets, while checkpoint selection
(:class:`bfpo.eval.selection.SelectBySafety`) stays on validation prompts.

Put it **before** a selection callback in the Trainer's list: the selector puts the chosen weights back in
``on_train_end``, and a curve point scored after that would be of the restored model, not of the last step.
The history is written to ``output_dir/curve.json``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from transformers import TrainerCallback

from bfpo.errors import UserInputError

logger = logging.getLogger("bfpo.eval.curve")

REQUIRED = ("prompt", "kind", "source")


class EvaluateEvery(TrainerCallback):
    """Score the training model on ``rows`` (dicts with ``prompt``, ``kind`` and ``source``) every ``every``
    steps; ``points`` holds ``{"step", "sets"}`` per scored step. ``start``: the starting model's per-set
    rates when they are already known (its evaluation before training), used for step 0 instead of answering
    the prompts again. ``judge`` is any :class:`bfpo.eval.judges.Judge` (default the offline ``refusal``)."""

    def __init__(
        self,
        tokenizer,
        rows: Sequence[Dict[str, str]],
        every: int,
        judge=None,
        max_new_tokens: int = 48,
        batch_size: int = 8,
        bf16: bool = False,
        system_prompt: Optional[str] = None,
        start: Optional[Dict[str, Dict[str, Any]]] = None,
        progress: bool = False,
    ):
        if every < 1:
            raise UserInputError(f"evaluation curve: every must be >= 1, got {every}")
        if not rows:
            raise UserInputError("evaluation curve: no prompt rows to score")
        for i, r in enumerate(rows):
            missing = [k for k in REQUIRED if not r.get(k)]
            if missing:
                raise UserInputError(f"evaluation curve: prompt row {i} has no {', '.join(missing)}")
        from bfpo.eval.judges import get_judge

        self.tokenizer, self.rows, self.every = tokenizer, [dict(r) for r in rows], every
        self.judge = judge or get_judge("refusal")
        self.max_new_tokens, self.batch_size, self.bf16 = max_new_tokens, batch_size, bf16
        self.system_prompt, self.start, self.progress = system_prompt, start, progress
        self.points: List[Dict[str, Any]] = []

    def score(self, model, step: int) -> Dict[str, Dict[str, Any]]:
        """The per-set rates of ``model`` as it is now (greedy answers, judged)."""
        from bfpo.eval.evaluate import answer, judged_samples, set_rates

        was_training = model.training
        model.eval()
        responses = answer(
            model,
            self.tokenizer,
            self.rows,
            self.max_new_tokens,
            self.batch_size,
            self.bf16,
            self.system_prompt,
            progress=self.progress,
            desc=f"evaluation curve (step {step})",
        )
        if was_training:
            model.train()
        return set_rates(judged_samples(self.rows, responses, self.judge))

    def _record(self, model, step: int, sets: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
        sets = sets if sets is not None else self.score(model, step)
        self.points.append({"step": step, "sets": sets})
        logger.info(
            "evaluation curve at step %d: %s",
            step,
            ", ".join(f"{k} {m['refusal']:.1f}% refused" for k, m in sets.items()),
        )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and not self.points:
            self._record(model, state.global_step, self.start)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and state.global_step % self.every == 0:
            self._record(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        if not self.points or self.points[-1]["step"] != state.global_step:
            self._record(model, state.global_step)
        if args is not None and args.output_dir and state.is_world_process_zero:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, "curve.json"), "w") as f:
                json.dump(self.summary(), f, indent=2)

    def summary(self) -> Dict[str, Any]:
        """What ``curve.json`` holds: the settings and every scored step's per-set rates."""
        return {
            "every": self.every,
            "judge": getattr(self.judge, "name", type(self.judge).__name__),
            "max_new_tokens": self.max_new_tokens,
            "start_known": self.start is not None,
            "points": self.points,
        }
