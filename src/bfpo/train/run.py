"""``bfpo train --config RECIPE.yaml [section.key=value ...]``: the preference stage, top to bottom.

1. read the recipe and build ``BFPOConfig`` (bad keys fail here, before anything loads);
2. load the safety and helpfulness pairs through their schema adapters and build the training set of
   the chosen mode (bfpo, bfpo_no_buffer, dpo_h, dpo_s, mix);
3. tokenise and validate every pair (errors name file, row and field);
4. load the model, select trainable layers, precompute reference log-probs, train;
5. save the model directory (safetensors + tokenizer + model card) and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Dict, List, Optional

from bfpo.train.config import add_recipe_arguments, load_recipe, make_config

logger = logging.getLogger("bfpo.train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_recipe_arguments(p, "train.tau=0.1")


def load_sources(recipe: Dict[str, Any]):
    """Load the recipe's safety and helpfulness pairs (lists of PairRecord) and the drop reports."""
    from bfpo.data.adapters import load_pairs_with_report

    data = recipe.get("data") or {}
    on_error = data.get("on_error", "raise")
    out, reports = {}, {}
    for side in ("safety", "helpful"):
        spec = data.get(side)
        if not spec:
            out[side] = []
            continue
        # a limit takes a seeded random subset, never the first rows (PKU-SafeRLHF v1.0 is ordered by
        # source model); "shuffle: false" in the source keeps the file order
        shuffle = spec.get("shuffle", spec.get("limit") is not None)
        recs, report = load_pairs_with_report(spec["source"], schema=spec.get("schema", "auto"),
                                              split=spec.get("split"), column_map=spec.get("column_map"),
                                              kind=side, limit=spec.get("limit"), on_error=on_error,
                                              seed=data.get("seed", 0), shuffle=bool(shuffle),
                                              revision=spec.get("revision"))
        out[side], reports[side] = recs, report
    return out["safety"], out["helpful"], reports


def build_records(recipe: Dict[str, Any]):
    """Load and validate the recipe's pairs and build the training set of its mode (no model needed)."""
    from bfpo.data.modes import build_training_set

    data = recipe.get("data") or {}
    safety, helpful, _ = load_sources(recipe)
    return build_training_set(safety, helpful, data.get("mode", "bfpo"), seed=data.get("seed", 0))


def tokenize_training_set(recipe: Dict[str, Any], tset, tokenizer, config) -> tuple:
    """Tokenise and length-check the training set; returns examples and the counts for the model card."""
    from bfpo.data.tokenize import tokenize_pairs

    examples, stats = tokenize_pairs(tset.records, tokenizer, config.max_length, config.max_prompt_length,
                                     on_error=(recipe.get("data") or {}).get("on_error", "raise"))
    if not examples:
        from bfpo.data.records import DataValidationError

        raise DataValidationError(f"{recipe.get('_path')}: no training pairs left after validation")
    counts = {"mode": tset.mode, "buffered": tset.buffered, "pairs": len(examples), **tset.counts(),
              "tokenization": stats}
    return examples, counts


def train_from_recipe(recipe: Dict[str, Any], resume: bool = False, callbacks: Optional[List] = None,
                      overwrite: bool = False, **config_defaults):
    """Run the whole preference stage of a recipe; returns the trainer (its state holds the logs).
    ``overwrite`` lets the run write into an output folder that holds files bfpo did not write."""
    from transformers.trainer_utils import get_last_checkpoint

    from bfpo.train.model_io import check_output_dir, load_model, load_tokenizer, model_card, save_final
    from bfpo.train.trainer import BFPOTrainer, train_or_restore

    config = make_config(recipe, **config_defaults)
    tokenizer = load_tokenizer(recipe["model"])  # a missing chat template fails here, before anything else
    check_output_dir(config.output_dir, resume, overwrite)
    tset = build_records(recipe)  # data errors surface here, before any model weights load
    examples, counts = tokenize_training_set(recipe, tset, tokenizer, config)
    if config.buffered != tset.buffered:
        logger.info("mode %s: buffered=%s", tset.mode, tset.buffered)
        config.buffered = tset.buffered
    model = load_model(recipe["model"])
    trainer = BFPOTrainer(model, config, train_dataset=examples, processing_class=tokenizer, callbacks=callbacks)
    last = get_last_checkpoint(config.output_dir) if resume else None
    if resume and last is None:
        logger.info("--resume: no checkpoint in %s, starting from the beginning", config.output_dir)
    train_or_restore(trainer, last)  # a checkpoint at the last step takes no further step
    write_rank_record(trainer)
    final = {k: v for k, v in trainer.state.log_history[-1].items()}
    settings = {"loss": config.loss, "tau": config.tau, "alpha": config.alpha,
                "label_constants": config.label_constants(), "case_labels": config.case_labels(),
                "trainable": config.trainable, "learning_rate": config.learning_rate,
                "max_steps": config.max_steps, "epochs": config.num_train_epochs,
                "per_device_train_batch_size": config.per_device_train_batch_size,
                "gradient_accumulation_steps": config.gradient_accumulation_steps, "seed": config.seed}
    card = model_card("bfpo model", recipe["model"]["name_or_path"], settings, final,
                      {**counts, "sources": {k: v for k, v in (recipe.get("data") or {}).items()}})
    summary = json.dumps({"settings": settings, "data": counts, "final": final}, indent=2, default=str)
    save_final(trainer, config.output_dir, card, extra_files={"train_summary.json": summary})
    return trainer


def write_rank_record(trainer) -> None:
    """Each process writes what its micro-batches held and a checksum of its weights
    (``output_dir/ranks/rank{r}.json``), so a distributed run can be audited for buffering and sync."""
    import os

    import torch

    rank = trainer.accelerator.process_index
    model = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    folder = os.path.join(trainer.args.output_dir, "ranks")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world_size": trainer.accelerator.num_processes, "param_checksum": checksum,
                   "composition": trainer.composition}, f)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recipe = load_recipe(args.config, args.overrides)
    trainer = train_from_recipe(recipe, resume=args.resume, overwrite=args.overwrite)
    print(f"saved {trainer.args.output_dir}")
