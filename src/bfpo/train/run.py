"""``bfpo train``: the preference stage, top to bottom (:func:`train_preference`).

1. read the settings (``ModelArguments``, ``DataArguments``, ``BFPOConfig``) from ``--config`` and the flags;
   bad keys and values fail here, before anything loads;
2. load the safety and helpfulness pairs through their schema adapters (or take them from the caller) and
   build the training set of the chosen mode (bfpo, bfpo_no_buffer, dpo_h, dpo_s, mix);
3. tokenise and validate every pair (errors name file, row and field);
4. load the model, select trainable layers, precompute reference log-probs, train;
5. save the model directory (safetensors + tokenizer + model card + ``config.yaml``) and ``metrics.jsonl``.

``--method`` (or ``method:`` in the ``--config`` file; the flag wins) chooses the trainer before anything else
is read: ``preference`` (the default, above) or ``morl``, the RL baseline on a helpfulness and a safety reward
(:mod:`bfpo.train.morl`, whose settings ``bfpo train --method morl --help`` lists; ``bfpo morl`` is an alias).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from bfpo.args import ConfigError, choices, peek_choice
from bfpo.errors import UserInputError

logger = logging.getLogger("bfpo.train")

#: the data fields that name files: a relative path is looked up beside the --config file
PATH_FIELDS = ("safety_source", "helpful_source")

#: ``bfpo train --method``: the trainers, the default first
METHODS = {
    "preference": "offline preference training on safety and helpfulness pairs (loss bfpo, dpo, ipo or safedpo)",
    "morl": "MORL, the RL baseline: TRL's RLOO on a weighted helpfulness + safety reward (reward models or "
    "module:function callables); `bfpo train --method morl --help` lists its settings",
}
DEFAULT_METHOD = "preference"


@dataclass
class MethodArguments:
    """Which trainer ``bfpo train`` runs; it is read first, since each method has its own settings."""

    method: str = choices(
        *METHODS,
        default=DEFAULT_METHOD,
        help="; ".join(f"{name}: {text}" for name, text in METHODS.items())
        + ". The flag wins over the --config file's `method:`",
    )


def train_method(argv: Optional[Sequence[str]] = None) -> str:
    """The method of a ``bfpo train`` command line: ``--method``, else the ``--config`` file's ``method``, else
    ``preference``; an unknown one is a :class:`~bfpo.args.ConfigError` naming the flag, or the file and key."""
    from bfpo.train.recipes import resolve_recipe

    return peek_choice(argv, "method", tuple(METHODS), DEFAULT_METHOD, resolve_config=resolve_recipe)


def load_sources(data_args, seed: int = 0):
    """The safety and helpfulness pairs (lists of PairRecord) of ``data_args``' sources, and the drop
    reports. A side without a source gives no pairs."""
    from bfpo.data.adapters import load_pairs_with_report

    seed = data_args.data_seed if data_args.data_seed is not None else seed
    out, reports = {}, {}
    for side in ("safety", "helpful"):
        source = getattr(data_args, f"{side}_source")
        if not source:
            out[side] = []
            continue
        limit = getattr(data_args, f"{side}_limit")
        shuffle = getattr(data_args, f"{side}_shuffle")
        # a limit takes a seeded random subset, never the first rows (PKU-SafeRLHF v1.0 is ordered by
        # source model); "shuffle: false" keeps the file order
        recs, report = load_pairs_with_report(
            source,
            schema=getattr(data_args, f"{side}_schema"),
            split=getattr(data_args, f"{side}_split"),
            column_map=getattr(data_args, f"{side}_column_map"),
            kind=side,
            limit=limit,
            on_error=data_args.on_error,
            seed=seed,
            shuffle=bool(limit is not None if shuffle is None else shuffle),
            revision=getattr(data_args, f"{side}_revision"),
        )
        out[side], reports[side] = recs, report
    return out["safety"], out["helpful"], reports


def training_set(records: Any, data_args=None, seed: int = 0):
    """The :class:`~bfpo.data.modes.TrainingSet` to train on (no model needed):

    * ``records`` None: loaded from ``data_args``' sources;
    * a ``TrainingSet``: as given;
    * a ``(safety, helpful)`` pair of PairRecord lists;
    * a ``datasets.Dataset`` or list of dicts in TRL's preference format plus ``safe_chosen`` /
      ``safe_rejected`` (:func:`bfpo.data.adapters.from_trl`), split into safety and helpful pairs by kind.

    Except for a ``TrainingSet``, the set is built for ``data_args.mode`` (``bfpo`` without data_args).
    """
    from bfpo.data.adapters import records_from_trl_dataset
    from bfpo.data.modes import TrainingSet, build_training_set
    from bfpo.data.records import PairRecord

    if isinstance(records, TrainingSet):
        return records
    mode = data_args.mode if data_args is not None else "bfpo"
    if data_args is not None and data_args.data_seed is not None:
        seed = data_args.data_seed
    if records is None:
        if data_args is None or not (data_args.safety_source or data_args.helpful_source):
            raise UserInputError("no training data: give records, or data_args with safety_source / helpful_source")
        safety, helpful, _ = load_sources(data_args, seed)
    elif isinstance(records, tuple) and len(records) == 2:
        safety, helpful = list(records[0]), list(records[1])
        bad = [type(r).__name__ for r in safety + helpful if not isinstance(r, PairRecord)]
        if bad:
            raise TypeError(f"records: a (safety, helpful) pair holds PairRecord lists, got {bad[0]}")
    else:
        pairs = records_from_trl_dataset(records, "records")
        safety = [r for r in pairs if r.kind == "safety"]
        helpful = [r for r in pairs if r.kind != "safety"]
    return build_training_set(safety, helpful, mode, seed=seed)


def tokenize_training_set(tset, tokenizer, config, on_error: str = "raise") -> tuple:
    """Tokenise and length-check the training set; returns examples and the counts for the model card."""
    from bfpo.data.records import DataValidationError
    from bfpo.data.tokenize import tokenize_pairs

    examples, stats = tokenize_pairs(
        tset.records, tokenizer, config.max_length, config.max_prompt_length, on_error=on_error
    )
    if not examples:
        raise DataValidationError(f"{config.output_dir}: no training pairs left after validation")
    counts = {
        "mode": tset.mode,
        "buffered": tset.buffered,
        "pairs": len(examples),
        **tset.counts(),
        "tokenization": stats,
    }
    return examples, counts


def train_preference(
    model_args,
    config,
    *,
    data_args=None,
    records=None,
    model=None,
    tokenizer=None,
    callbacks: Optional[Sequence] = None,
    resume: bool = False,
    overwrite: bool = False,
    card_title: Optional[str] = "bfpo model",
    extra_files: Optional[Dict[str, str]] = None,
):
    """Run the whole preference stage and write the model directory; returns the trainer (its state holds
    the logs).

    Args:
        model_args: :class:`~bfpo.train.config.ModelArguments` (may be None when ``model`` and ``tokenizer``
            are given).
        config: :class:`~bfpo.train.config.BFPOConfig` (loss, tau, alpha, trainable, max_steps, seed, ...).
        data_args: :class:`~bfpo.train.config.DataArguments`: the sources (when ``records`` is None), the
            mode, on_error and the data seed.
        records: in-memory data instead of the sources (see :func:`training_set`).
        model, tokenizer: objects to train instead of loading ``model_args``' (``model_args.chat_template``
            still applies to a given tokenizer, which must end up with a template).
        callbacks: extra ``TrainerCallback`` objects.
        resume: continue from the last checkpoint in ``output_dir``.
        overwrite: write into an ``output_dir`` holding files bfpo did not write (never over a finished model).
        card_title: the model card's title; None writes no card (README.md).
        extra_files: more files (name -> text) saved with the model.

    The model is saved whatever ``save_strategy`` says (staged, so the folder is a model only once complete),
    with ``train_summary.json``, ``config.yaml`` (the settings, re-runnable with ``bfpo train --config``) and
    ``metrics.jsonl``. Training stops at the first non-finite gradient; nothing is saved then.
    """
    from transformers.trainer_utils import get_last_checkpoint

    from bfpo.train import model_io
    from bfpo.train.curves import distance_to_targets, plot_margins
    from bfpo.train.trainer import BatchCompositionCallback, BFPOTrainer, train_or_restore

    # a missing chat template fails here, before anything else
    tokenizer = _tokenizer(model_args, tokenizer)
    model_io.check_output_dir(config.output_dir, resume, overwrite)
    tset = training_set(records, data_args, config.seed)  # data errors surface here, before any weights load
    on_error = data_args.on_error if data_args is not None else "raise"
    examples, counts = tokenize_training_set(tset, tokenizer, config, on_error)
    if config.buffered != tset.buffered:
        logger.info("mode %s: buffered=%s", tset.mode, tset.buffered)
        config.buffered = tset.buffered
    model = model if model is not None else model_io.load_model(model_args)
    callbacks = list(callbacks or [])
    if config.world_size > 1:  # each rank records its micro-batches for the rank audit (write_rank_record)
        callbacks.append(BatchCompositionCallback())
    trainer = BFPOTrainer(model, config, train_dataset=examples, processing_class=tokenizer, callbacks=callbacks)
    last = get_last_checkpoint(config.output_dir) if resume else None
    if resume and last is None:
        logger.info("--resume: no checkpoint in %s, starting from the beginning", config.output_dir)
    train_or_restore(trainer, last)  # a checkpoint at the last step takes no further step
    write_rank_record(trainer)
    final = dict(trainer.state.log_history[-1]) if trainer.state.log_history else {}
    settings = {
        "loss": config.loss,
        "tau": config.tau,
        "alpha": config.alpha,
        "label_constants": config.label_constants(),
        "case_labels": config.case_labels(),
        "trainable": config.trainable,
        "learning_rate": config.learning_rate,
        "max_steps": config.max_steps,
        "epochs": config.num_train_epochs,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "seed": config.seed,
    }
    sources = _sources(data_args, records)
    base = _base_model(model_args, model)
    card = (
        None
        if card_title is None
        else model_io.model_card(card_title, base, settings, final, {**counts, "sources": sources})
    )
    # does the run train toward the objective's optimum? per-case margins (tau*h) against their targets g_I
    margins = distance_to_targets(trainer.state.log_history, config.case_labels()) if config.loss == "bfpo" else {}
    summary = {"settings": settings, "data": counts, "final": final, "margins_vs_targets": margins}
    files = {
        "train_summary.json": json.dumps(summary, indent=2, default=str),
        "config.yaml": settings_yaml(model_args, data_args, config),
        **(extra_files or {}),
    }
    model_io.save_final(trainer, config.output_dir, card, extra_files=files)
    if margins and trainer.args.should_save:
        plot_margins(trainer.state.log_history, config.case_labels(), Path(config.output_dir) / "margins.png")
    return trainer


def _tokenizer(model_args, tokenizer):
    """The tokenizer to train with: loaded from ``model_args``, or the given one with the template set."""
    from bfpo.train import model_io

    if tokenizer is None:
        if model_args is None:
            raise UserInputError("give model_args, or both a model and a tokenizer")
        return model_io.load_tokenizer(model_args)
    template = model_args.chat_template if model_args is not None else None
    return model_io.prepare_tokenizer(tokenizer, template, getattr(tokenizer, "name_or_path", "") or "tokenizer")


def _base_model(model_args, model) -> str:
    if model_args is not None:
        return model_args.model_name_or_path
    return getattr(getattr(model, "config", None), "_name_or_path", "") or "a model given in memory"


def _sources(data_args, records) -> Dict[str, Any]:
    """The data's provenance for the model card: the source settings, or what was given in memory."""
    if records is not None:
        return {"records": f"given in memory ({type(records).__name__})"}
    from bfpo.args import to_dict

    return {k: v for k, v in to_dict(data_args).items() if v is not None}


def settings_yaml(*instances, command: str = "train") -> str:
    """The settings of a run as a flat YAML file that ``bfpo COMMAND --config`` reads back: every field of the
    dataclass ``instances`` (None ones skipped) whose value differs from its default."""
    import yaml

    from bfpo.train.config import settings_to_write

    values = settings_to_write(*[i for i in instances if i is not None])
    head = f"# the settings of this run (flat; re-run with: bfpo {command} --config config.yaml --output_dir NEW)\n"
    return head + yaml.safe_dump(values, sort_keys=False, allow_unicode=True)


def write_rank_record(trainer) -> None:
    """Each process writes a checksum of its weights and, when a ``BatchCompositionCallback`` recorded
    them, what its micro-batches held (``output_dir/ranks/rank{r}.json``), so a distributed run can be
    audited for buffering and sync."""
    import os

    import torch

    rank = trainer.accelerator.process_index
    model = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    folder = os.path.join(trainer.args.output_dir, "ranks")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "rank": rank,
                "world_size": trainer.accelerator.num_processes,
                "param_checksum": checksum,
                "composition": getattr(trainer, "composition", None),
            },
            f,
        )


def train_arguments(argv: Optional[Sequence[str]] = None) -> tuple:
    """(ModelArguments, DataArguments, BFPOConfig, RunArguments) of a ``bfpo train`` command line of the
    preference method (``--method preference``, the default; another method is an error naming ``method``)."""
    from bfpo.args import parse
    from bfpo.train.config import BFPOConfig, DataArguments, ModelArguments, RunArguments
    from bfpo.train.recipes import resolve_recipe

    method = train_method(argv)
    if method != DEFAULT_METHOD:
        raise ConfigError(
            f"method: {method} has its own settings (`bfpo train --method {method} --help`); these are the "
            f"{DEFAULT_METHOD} method's"
        )
    *settings, _ = parse(
        [ModelArguments, DataArguments, BFPOConfig, RunArguments, MethodArguments],
        argv,
        prog="bfpo train",
        description="BFPO / DPO / IPO / SafeDPO preference training (--method preference, the default), or "
        "MORL (--method morl; `bfpo train --method morl --help` lists its settings). --config takes a flat YAML "
        "file or a shipped recipe's name (`bfpo recipes` lists them); --field value flags win over the file.",
        resolve_config=resolve_recipe,
        path_fields=PATH_FIELDS,
    )
    return tuple(settings)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``bfpo train --config RECIPE [--field value ...] [--resume] [--overwrite]``; with ``--method morl``
    (or ``method: morl`` in the file), :func:`bfpo.train.morl.main`."""
    argv = list(argv) if argv is not None else None
    if train_method(argv) == "morl":
        from bfpo.train import morl

        morl.main(argv)
        return
    model_args, data_args, config, run = train_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from bfpo.train.model_io import closing_process_group

    with closing_process_group():
        trainer = train_preference(model_args, config, data_args=data_args, resume=run.resume, overwrite=run.overwrite)
    print(f"saved {trainer.args.output_dir}")
