"""``bfpo sft``: the supervised stage of section 4.2, before BFPO (:func:`train_sft`).

The SFT data mixes the helpfulness set's chosen responses with the SAFER response of every safety pair
that is actually safe (``bfpo.data.modes.sft_examples``); the resulting model is the reference policy of
the BFPO stage. Training itself is TRL's ``SFTTrainer`` (prompt-completion format, loss on the completion
only); its settings are any ``trl.SFTConfig`` field.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Sequence

from bfpo.errors import UserInputError

logger = logging.getLogger("bfpo.sft")


def sft_examples_of(data_args) -> tuple:
    """The prompt/completion rows of ``data_args``' sources (:func:`bfpo.data.modes.sft_examples`) and how
    many came from each side."""
    from bfpo.data.modes import sft_examples
    from bfpo.train.run import load_sources

    if data_args is None or not (data_args.safety_source or data_args.helpful_source):
        raise UserInputError("no SFT data: give examples, or data_args with safety_source / helpful_source")
    safety, helpful, _ = load_sources(data_args)
    examples = sft_examples(safety, helpful)
    return examples, {"from_helpful": len(helpful), "from_safety_safe_responses": len(examples) - len(helpful)}


def train_sft(
    model_args,
    config,
    *,
    data_args=None,
    examples: Optional[List[Dict[str, Any]]] = None,
    model=None,
    tokenizer=None,
    callbacks: Optional[Sequence] = None,
    resume: bool = False,
    overwrite: bool = False,
    card_title: Optional[str] = "bfpo SFT model",
):
    """Run the SFT stage and write the model directory; returns the TRL ``SFTTrainer``.

    ``examples`` are prompt/completion rows (as :func:`bfpo.data.modes.sft_examples` gives), else they are
    built from ``data_args``' sources. ``model``/``tokenizer`` may be given as objects instead of loading
    ``model_args``' (whose ``chat_template`` still applies). ``resume``/``overwrite`` as for
    :func:`bfpo.train.run.train_preference`; training stops at the first non-finite gradient, and the final
    model is saved whatever ``save_strategy`` says, with the card and ``config.yaml``.
    """
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer

    from bfpo.train import model_io
    from bfpo.train.run import _base_model, _tokenizer, settings_yaml
    from bfpo.train.trainer import NonFiniteGuard, train_or_restore

    tokenizer = _tokenizer(model_args, tokenizer)  # a missing chat template fails here, before anything else
    model_io.check_output_dir(config.output_dir, resume, overwrite)
    if examples is None:
        examples, origin = sft_examples_of(data_args)
    else:
        examples, origin = list(examples), {"given_in_memory": len(examples)}
    if not examples:
        raise UserInputError(
            f"{config.output_dir}: no SFT examples (no helpful pairs and no safe responses in the safety pairs)"
        )
    model = model if model is not None else model_io.load_model(model_args)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=list(callbacks or []) + [NonFiniteGuard()],
    )
    last = get_last_checkpoint(config.output_dir) if resume else None
    train_or_restore(trainer, last)  # a checkpoint at the last step takes no further step
    # TRL's SFTTrainer puts a fused-LM-head wrapper on the model INSTANCE (its ``forward`` attribute); the
    # wrapper closes over this model's original forward, so a ``copy.deepcopy`` of the trained model would
    # still compute with these weights. Give the model back with its class's forward.
    trained = trainer.accelerator.unwrap_model(trainer.model)
    trained = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    trained.__dict__.pop("forward", None)
    final = dict(trainer.state.log_history[-1]) if trainer.state.log_history else {}
    settings = {
        "stage": "sft (section 4.2)",
        "learning_rate": config.learning_rate,
        "epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "seed": config.seed,
    }
    data = {"examples": len(examples), **origin}
    card = (
        None
        if card_title is None
        else model_io.model_card(card_title, _base_model(model_args, model), settings, final, data)
    )
    summary = json.dumps({"settings": settings, "data": data, "final": final}, indent=2, default=str)
    model_io.save_final(
        trainer,
        config.output_dir,
        card,
        extra_files={
            "config.yaml": settings_yaml(model_args, data_args, config, command="sft"),
            "train_summary.json": summary,
        },
    )
    return trainer


def sft_arguments(argv: Optional[Sequence[str]] = None) -> tuple:
    """(ModelArguments, DataArguments, trl.SFTConfig, RunArguments) of a ``bfpo sft`` command line."""
    from trl import SFTConfig

    from bfpo.args import parse
    from bfpo.train.config import DataArguments, ModelArguments, RunArguments
    from bfpo.train.recipes import resolve_recipe
    from bfpo.train.run import PATH_FIELDS

    return parse(
        [ModelArguments, DataArguments, SFTConfig, RunArguments],
        argv,
        prog="bfpo sft",
        description="Supervised fine-tuning (section 4.2) on the helpful responses and the safe responses "
        "of the safety pairs. --config takes a flat YAML file or a shipped recipe's name; "
        "--field value flags win over the file.",
        resolve_config=resolve_recipe,
        path_fields=PATH_FIELDS,
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``bfpo sft --config RECIPE [--field value ...] [--resume] [--overwrite]``."""
    model_args, data_args, config, run = sft_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from bfpo.train.model_io import closing_process_group

    with closing_process_group():
        trainer = train_sft(model_args, config, data_args=data_args, resume=run.resume, overwrite=run.overwrite)
    print(f"saved {trainer.args.output_dir}")
