"""``bfpo train --method morl``: MORL, the paper's reinforcement-learning baseline, through TRL's online trainer
(:func:`train_morl`). ``bfpo morl`` is an alias of it.

MORL (Table 1; Appendix C.2) maximises a weighted sum of rewards under a KL penalty (Eq. 7 with
``g = sum_i w_i r_i``)::

    max_pi  E_{x, y ~ pi} [ sum_i w_i r_i(x, y) ]  -  tau KL(pi || pi_ref)

Training is TRL's ``RLOOTrainer``: each prompt gets ``num_generations`` samples, every reward function scores
them, TRL sums them with ``reward_weights`` and subtracts ``beta * (log pi - log pi_ref)`` summed over the
sequence, then takes a REINFORCE step with the leave-one-out baseline. The KL term inside the reward makes this
the objective above exactly (``beta`` is tau), whose optimum is ``pi_ref exp(g / tau) / Z`` (Theorem 3.1,
:func:`kl_optimum`). (GRPO would add a per-token k3 KL estimate to the loss instead, whose gradient is that of
the reverse KL, and scale advantages by the group's std, which changes the optimum.)

A reward is a callable ``f(prompts, completions, **columns) -> list[float]`` (TRL's signature), a
``module:function`` name of one, or a folder of a sequence-classification reward model
(:class:`RewardModel`, scored on prompt + completion).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from bfpo.errors import TrainingDivergedError, UserInputError

logger = logging.getLogger("bfpo.morl")

RewardSpec = Union[str, Path, Callable[..., List[float]]]


# ------------------------------------------------------------------------------------------ rewards
def text_of(item: Any) -> str:
    """The text of a prompt or completion as TRL hands it to a reward function: a string as is, a list of
    chat messages as the content of the last one."""
    if isinstance(item, str):
        return item
    if isinstance(item, (list, tuple)) and item and isinstance(item[-1], dict):
        return str(item[-1].get("content", ""))
    raise TypeError(f"expected text or a list of chat messages, got {type(item).__name__}")


class RewardModel:
    """A sequence-classification reward model (a model folder) as a TRL reward function: the score of
    prompt + completion is the first logit. A chat prompt is rendered with the reward tokenizer's chat template
    (the completion as the assistant turn); a text prompt is joined with its completion as is."""

    def __init__(self, path: str | Path, key: str = "reward model", batch_size: int = 16, device: Any = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from bfpo.train.model_io import from_pretrained_or_user_error

        self.path, self.batch_size = str(path), batch_size
        self.__name__ = Path(self.path).name or "reward_model"  # TRL names the reward by it in its logs
        self.tokenizer = from_pretrained_or_user_error(AutoTokenizer, self.path, key)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = from_pretrained_or_user_error(AutoModelForSequenceClassification, self.path, key)
        if self.model.config.pad_token_id is None:  # the score is read at the last non-pad token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        if device is not None:
            self.model.to(device)

    def texts(self, prompts: Sequence[Any], completions: Sequence[Any]) -> List[str]:
        out = []
        for p, c in zip(prompts, completions):
            if isinstance(p, str):
                out.append(p + text_of(c))
            elif getattr(self.tokenizer, "chat_template", None):
                turn = [{"role": "assistant", "content": text_of(c)}]
                out.append(self.tokenizer.apply_chat_template(list(p) + turn, tokenize=False))
            else:
                out.append(text_of(p) + "\n" + text_of(c))
        return out

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> List[float]:
        import torch

        texts = self.texts(prompts, completions)
        device = next(self.model.parameters()).device
        limit = getattr(self.model.config, "max_position_embeddings", None)
        scores: List[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=limit is not None,
                    max_length=limit,
                ).to(device)
                scores.extend(self.model(**enc).logits[:, 0].float().tolist())
        return scores


def resolve_reward(spec: RewardSpec, key: str) -> Callable[..., List[float]]:
    """A reward function from ``spec``: a callable as is; ``module:function``, imported; a model folder
    (holding ``config.json``), a :class:`RewardModel`. Anything else is an error naming ``key``."""
    if callable(spec):
        return spec
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise UserInputError(f"{key}: expected a callable, module:function or a reward model folder, got {spec!r}")
    text = str(spec).strip()
    folder = Path(text).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserInputError(f"{key}: {folder} is a folder without config.json, not a reward model")
        return RewardModel(folder, key=key)
    module, sep, name = text.partition(":")
    if not sep or not module or not name:
        raise UserInputError(
            f"{key}: {text!r} is neither a model folder nor module:function (e.g. my_rewards:helpfulness)"
        )
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UserInputError(f"{key}: cannot import module {module!r} of {text!r} ({e})") from None
    func = getattr(mod, name, None)
    if not callable(func):
        raise UserInputError(f"{key}: module {module!r} has no function {name!r}")
    return func


def morl_rewards(
    help_reward: RewardSpec, safety_reward: RewardSpec, weights: Optional[Sequence[float]] = None
) -> Tuple[List[Callable[..., List[float]]], List[float]]:
    """(reward functions, weights) of the two factors: helpfulness first, then safety. ``weights`` default to
    1 each; they must be two finite numbers."""
    funcs = [resolve_reward(help_reward, "help_reward"), resolve_reward(safety_reward, "safety_reward")]
    return funcs, check_weights(weights, funcs, ("help_reward", "safety_reward"))


def check_weights(
    weights: Optional[Sequence[float]], funcs: Sequence[Any], names: Optional[Sequence[str]] = None
) -> List[float]:
    """``weights`` as floats (1 each when None); an error naming ``reward_weights`` unless there is one
    finite number per reward function."""
    if weights is None:
        return [1.0] * len(funcs)
    what = ", ".join(names) if names else f"{len(funcs)} reward function(s)"
    if len(weights) != len(funcs):
        raise UserInputError(
            f"reward_weights: {len(weights)} weight(s) {list(weights)} for {len(funcs)} rewards ({what})"
        )
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise UserInputError(f"reward_weights: every weight must be a finite number, got {list(weights)}")
        out.append(float(w))
    return out


def check_tau(beta: Any) -> None:
    """MORL needs its KL penalty: an error naming ``beta`` (tau) unless it is a finite number > 0."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise UserInputError(
            f"beta (tau, the KL coefficient of the MORL objective) must be a finite number > 0, got {beta!r}"
        )


def kl_optimum(ref: Sequence[float], reward: Sequence[float], tau: float) -> List[float]:
    """Theorem 3.1: the maximiser ``pi_ref(y) exp(r(y) / tau) / Z`` of ``E_pi[r] - tau KL(pi || pi_ref)`` over a
    finite set of outcomes with reference probabilities ``ref`` (any positive masses; normalised here)."""
    check_tau(tau)
    if len(ref) != len(reward) or not ref:
        raise ValueError(f"ref and reward need the same, non-zero length, got {len(ref)} and {len(reward)}")
    if min(ref) <= 0:
        raise ValueError(f"ref masses must be > 0, got {list(ref)}")
    logits = [math.log(p) + r / tau for p, r in zip(ref, reward)]
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    total = sum(weights)
    return [w / total for w in weights]


# ------------------------------------------------------------------------------------------ driver
def prompt_rows(prompts: Any) -> List[Dict[str, Any]]:
    """Rows for the trainer: a text prompt becomes one user message (TRL then applies the chat template);
    a dict keeps its other columns, which reach the reward functions as keyword arguments."""
    rows = []
    for i, p in enumerate(list(prompts)):
        row = dict(p) if isinstance(p, dict) else {"prompt": p}
        if "prompt" not in row:
            raise UserInputError(f"prompts row {i}: no 'prompt' field (fields: {', '.join(map(str, row)) or 'none'})")
        if isinstance(row["prompt"], str):
            if not row["prompt"].strip():
                raise UserInputError(f"prompts row {i}: the prompt is empty")
            row["prompt"] = [{"role": "user", "content": row["prompt"]}]
        rows.append(row)
    if not rows:
        raise UserInputError("prompts: no prompts to train on")
    return rows


def train_morl(
    model_args,
    config,
    *,
    prompts: Any,
    reward_funcs: Sequence[RewardSpec],
    reward_weights: Optional[Sequence[float]] = None,
    model=None,
    tokenizer=None,
    callbacks: Optional[Sequence] = None,
    overwrite: bool = False,
    card_title: Optional[str] = "bfpo MORL model",
    extra_files: Optional[Dict[str, str]] = None,
):
    """Train with MORL through TRL's ``RLOOTrainer`` and write the model folder; returns the trainer.

    Args:
        model_args: :class:`~bfpo.train.config.ModelArguments` (None when ``model`` and ``tokenizer`` are given).
        config: ``trl.RLOOConfig``; its ``beta`` is tau (must be > 0) and ``reward_weights`` is set here.
        prompts: texts, or rows with a ``prompt`` (text or chat messages) and any columns the rewards read.
        reward_funcs: reward functions or specs (:func:`resolve_reward`).
        reward_weights: one weight per reward function (default 1 each).
        model, tokenizer: objects to train instead of loading ``model_args``'. The reference policy is loaded
            from the model's folder; a model built in memory is saved to a temporary folder for it.

    Writes, staged like the other drivers, the model, ``config.yaml``, ``train_summary.json`` (settings, the
    last logged metrics, the first and last mean of every reward, the wall time) and a card. A non-finite loss
    or gradient stops the run with :class:`~bfpo.errors.TrainingDivergedError` and saves nothing.
    """
    from datasets import Dataset
    from trl import RLOOTrainer

    from bfpo.train import model_io
    from bfpo.train.run import _base_model, _tokenizer, settings_yaml
    from bfpo.train.trainer import NonFiniteGuard, train_or_restore

    check_tau(config.beta)
    funcs = [resolve_reward(f, f"reward_funcs[{i}]") for i, f in enumerate(reward_funcs)]
    if not funcs:
        raise UserInputError("reward_funcs: give at least one reward function")
    config.reward_weights = check_weights(reward_weights, funcs)
    rows = prompt_rows(prompts)
    tokenizer = _tokenizer(model_args, tokenizer)
    model_io.check_output_dir(config.output_dir, resume=False, overwrite=overwrite)
    model = model if model is not None else model_io.load_model(model_args)
    started = time.perf_counter()
    base = _base_model(model_args, model)
    with tempfile.TemporaryDirectory(prefix="bfpo-morl-ref-") as tmp:
        name = str(model.config._name_or_path)
        if not (Path(name) / "config.json").is_file():
            model.save_pretrained(tmp)  # TRL loads the reference policy from the model's folder
            model.config._name_or_path = tmp
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=funcs,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=list(callbacks or []) + [NonFiniteGuard()],
        )
        model.config._name_or_path = name
    for f in funcs:
        if isinstance(f, RewardModel):
            f.model.to(trainer.accelerator.device)
    train_or_restore(trainer, None)
    wall = time.perf_counter() - started
    bad = [
        (h.get("step"), h["loss"]) for h in trainer.state.log_history if "loss" in h and not math.isfinite(h["loss"])
    ]
    if bad:
        raise TrainingDivergedError(
            f"{config.output_dir}: training diverged: loss {bad[0][1]} at step {bad[0][0]}; no model was saved. "
            "Lower learning_rate, or check that every reward is finite."
        )
    # TRL's fused-LM-head wrapper sits on the model instance (see bfpo.train.sft): give back the class's forward
    trained = trainer.accelerator.unwrap_model(trainer.model)
    trained = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    trained.__dict__.pop("forward", None)
    names = list(trainer.reward_func_names)
    settings = {
        "loss": "morl",
        "objective": "max E[sum_i w_i r_i] - tau KL(pi || pi_ref) (Eq. 7 with a weighted-sum reward)",
        "trainer": "trl.RLOOTrainer (KL in the reward, leave-one-out baseline)",
        "tau (beta)": config.beta,
        "reward_functions": names,
        "reward_weights": dict(zip(names, config.reward_weights)),
        "learning_rate": config.learning_rate,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "num_generations": config.num_generations,
        "max_completion_length": config.max_completion_length,
        "temperature": config.temperature,
        "seed": config.seed,
    }
    final = dict(trainer.state.log_history[-1]) if trainer.state.log_history else {}
    summary = {
        "settings": settings,
        "data": {"prompts": len(rows)},
        "final": final,
        "rewards": reward_trace(trainer.state.log_history, names),
        "wall_seconds": round(wall, 2),
    }
    card = (
        None if card_title is None else model_io.model_card(card_title, base, settings, final, {"prompts": len(rows)})
    )
    files = {
        "train_summary.json": json.dumps(summary, indent=2, default=str),
        "config.yaml": settings_yaml(model_args, config, command="train --method morl"),
        **(extra_files or {}),
    }
    model_io.save_final(trainer, config.output_dir, card, extra_files=files)
    trainer.wall_seconds = wall
    return trainer


def reward_trace(log_history: Sequence[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """First and last logged mean of each reward function and of the weighted sum (``reward``)."""
    out: Dict[str, Dict[str, float]] = {}
    for key, label in [("reward", "weighted_sum")] + [(f"rewards/{n}/mean", n) for n in names]:
        values = [h[key] for h in log_history if key in h]
        if values:
            out[label] = {"first": values[0], "last": values[-1]}
    return out


# ------------------------------------------------------------------------------------------ command
@dataclass
class MORLArguments:
    """The rewards and prompts of ``bfpo train --method morl`` (the KL coefficient tau is ``--beta``, the
    weights ``--reward_weights``: helpfulness first, then safety)."""

    help_reward: str = field(
        metadata={
            "help": "helpfulness reward: module:function (f(prompts, completions, **columns)) or a reward model folder"
        }
    )
    safety_reward: str = field(
        metadata={
            "help": "safety reward: module:function (f(prompts, completions, **columns)) or a reward model folder"
        }
    )
    prompts: str = field(
        metadata={
            "help": "a .jsonl/.json/.csv/.parquet file with a 'prompt' column (text or chat messages); other "
            "columns reach the reward functions as keyword arguments"
        }
    )


def morl_arguments(argv: Optional[Sequence[str]] = None) -> tuple:
    """(ModelArguments, MORLArguments, trl.RLOOConfig, RunArguments) of a ``bfpo train --method morl`` command
    line. ``--method morl`` is implied (it wins over the file's ``method``, as any flag does): ``bfpo morl ARGS``
    is ``bfpo train --method morl ARGS``; another ``--method`` flag is an error."""
    from trl import RLOOConfig

    from bfpo.args import ConfigError, parse
    from bfpo.train.config import ModelArguments, RunArguments
    from bfpo.train.run import MethodArguments, train_method

    argv = ["--method", "morl", *(sys.argv[1:] if argv is None else argv)]
    method = train_method(argv)  # the last --method flag: checked before the other settings
    if method != "morl":
        raise ConfigError(f"--method: {method} is not MORL; `bfpo morl` is `bfpo train --method morl`")
    *settings, _ = parse(
        [ModelArguments, MORLArguments, RLOOConfig, RunArguments, MethodArguments],
        argv,
        prog="bfpo train --method morl",
        description="MORL (the paper's RL baseline): TRL's RLOO on a weighted sum of a helpfulness and a safety "
        "reward under a KL penalty (--beta is tau). --config takes a flat YAML file; --field value flags win. "
        "`bfpo morl` is an alias of `bfpo train --method morl`.",
        path_fields=("prompts", "help_reward", "safety_reward"),
    )
    return tuple(settings)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``bfpo train --method morl --model_name_or_path M --help_reward R --safety_reward S --prompts FILE
    --output_dir D`` (and its alias ``bfpo morl ...``)."""
    from bfpo.files import read_table
    from bfpo.train.run import MethodArguments, settings_yaml

    model_args, morl_args, config, run = morl_arguments(argv)
    if run.resume:
        raise UserInputError("resume: MORL (bfpo train --method morl) does not resume; start a new output_dir")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    funcs, weights = morl_rewards(morl_args.help_reward, morl_args.safety_reward, config.reward_weights)
    table = read_table(morl_args.prompts)
    if "prompt" not in table.column_names:
        raise UserInputError(f"prompts: {morl_args.prompts} has no 'prompt' column ({', '.join(table.column_names)})")
    from bfpo.train.model_io import closing_process_group

    with closing_process_group():
        trainer = train_morl(
            model_args,
            config,
            prompts=table.to_list(),
            reward_funcs=funcs,
            reward_weights=weights,
            overwrite=run.overwrite,
            # `method: morl` in the file: `bfpo train --config config.yaml` runs MORL again
            extra_files={
                "config.yaml": settings_yaml(model_args, MethodArguments("morl"), morl_args, config, command="train")
            },
        )
    print(f"saved {trainer.args.output_dir} ({trainer.wall_seconds:.1f} s of training)")
