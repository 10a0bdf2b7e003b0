"""``bfpo sft --config RECIPE.yaml``: the supervised stage of section 4.2, before BFPO.

The SFT data mixes the helpfulness set's chosen responses with the SAFER response of every safety pair
that is actually safe (``bfpo.data.modes.sft_examples``); the resulting model is the reference policy of
the BFPO stage. Training itself is TRL's ``SFTTrainer`` (prompt-completion format, loss on the completion
only); the recipe's ``sft:`` section holds any ``trl.SFTConfig`` field.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Dict

from bfpo.train.config import RecipeError, add_recipe_arguments, check_stage, load_recipe, validate_section

logger = logging.getLogger("bfpo.sft")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from trl import SFTConfig

    add_recipe_arguments(p, "sft.learning_rate=1e-5", stage="sft", config_cls=SFTConfig)


def make_sft_config(recipe: Dict[str, Any]):
    from trl import SFTConfig

    check_stage(recipe, "sft")
    sft = {"report_to": "none", "completion_only_loss": True, **validate_section(recipe, "sft", SFTConfig)}
    if "output_dir" not in sft:
        raise RecipeError(f"{recipe.get('_path')}: sft.output_dir is required")
    try:
        return SFTConfig(**sft)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{recipe.get('_path')}: sft: {e}") from None


def sft_from_recipe(recipe: Dict[str, Any], resume: bool = False, overwrite: bool = False):
    """Run the SFT stage of a recipe; returns the TRL trainer. ``overwrite`` lets it write into an output
    folder that holds files bfpo did not write; training stops at the first non-finite gradient."""
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer

    from bfpo.data.modes import sft_examples
    from bfpo.train.model_io import check_output_dir, load_model, load_tokenizer, model_card, save_final
    from bfpo.train.run import load_sources
    from bfpo.train.trainer import NonFiniteGuard, train_or_restore

    config = make_sft_config(recipe)
    tokenizer = load_tokenizer(recipe["model"])  # a missing chat template fails here, before anything else
    check_output_dir(config.output_dir, resume, overwrite)
    safety, helpful, _ = load_sources(recipe)
    examples = sft_examples(safety, helpful)
    if not examples:
        raise RecipeError(f"{recipe.get('_path')}: no SFT examples (no helpful pairs and no safe responses in "
                         "the safety pairs)")
    model = load_model(recipe["model"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, callbacks=[NonFiniteGuard()])
    last = get_last_checkpoint(config.output_dir) if resume else None
    train_or_restore(trainer, last)  # a checkpoint at the last step takes no further step
    final = dict(trainer.state.log_history[-1])
    card = model_card("bfpo SFT model", recipe["model"]["name_or_path"],
                      {"stage": "sft (section 4.2)", "learning_rate": config.learning_rate,
                       "epochs": config.num_train_epochs, "max_steps": config.max_steps},
                      final, {"examples": len(examples), "from_helpful": len(helpful),
                              "from_safety_safe_responses": len(examples) - len(helpful)})
    save_final(trainer, config.output_dir, card)
    return trainer


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trainer = sft_from_recipe(load_recipe(args.config, args.overrides), resume=args.resume,
                              overwrite=args.overwrite)
    print(f"saved {trainer.args.output_dir}")
