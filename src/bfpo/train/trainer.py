"""``BFPOTrainer``: a thin ``transformers.Trainer`` subclass for BFPO, DPO and IPO.

What is ours (everything else — accelerate, DeepSpeed/FSDP, gradient accumulation, schedulers,
checkpoints, logging integrations — is ``transformers.Trainer``'s):

* one concatenated forward over [chosen; rejected] returning summed response log-probs
  (:mod:`bfpo.train.logps`, no full-vocabulary logits);
* the loss from :mod:`bfpo.objective` with the safety labels of each pair (Eq. 15);
* the buffered sampler (Algorithm 1, line 4): every micro-batch on every rank holds equal numbers of
  safety and helpfulness pairs;
* selected trainable layers theta' (Algorithm 1, line 2);
* reference log-probs precomputed once (and cached), or computed on the fly from a frozen copy / the
  base model with LoRA adapters disabled;
* metrics per Figure-3 case, and atomic checkpoints (written whole in a staging folder, then renamed).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from bfpo.errors import TrainingDivergedError
from bfpo.objective import CASES, preference_loss, safe_response_nll
from bfpo.train.collator import REF_KEYS, PairCollator, model_inputs
from bfpo.train.config import BFPOConfig
from bfpo.train.layers import disable_dropout, select_trainable, upcast_trainable
from bfpo.train.logps import add_response_logps_forward
from bfpo.train.model_io import nonfinite_parameters
from bfpo.train.reference import (
    attach_reference_logps,
    cache_key,
    compute_reference_logps,
    default_cache_dir,
    load_cached,
    save_cached,
)

logger = logging.getLogger(__name__)

CASE_IDS = {labels: i for i, (_, labels) in enumerate(CASES)}

#: The per-pair values ``BFPOTrainer`` gathers from every process for its metrics, in one collective.
METRIC_FIELDS = ("chosen_reward", "rejected_reward", "margin", "correct", "case", "is_safety")

#: Where a checkpoint is written before it is renamed into ``output_dir/checkpoint-N``.
CHECKPOINT_STAGING = ".staging"


def case_index(safe_chosen: torch.Tensor, safe_rejected: torch.Tensor) -> torch.Tensor:
    """Figure-3 case of each pair (0..3 in the order of ``objective.CASES``), labels >= 0.5 count as safe."""
    hw, hl = (safe_chosen >= 0.5).long(), (safe_rejected >= 0.5).long()
    # (1,0)->0, (1,1)->1, (0,0)->2, (0,1)->3
    return torch.where(hw == 1, hl, 2 + hl)


class JsonlLogCallback(TrainerCallback):
    """Append every log record to ``output_dir/metrics.jsonl`` (main process only).

    The file belongs to one run: when training begins it is cut back to the records of the steps the run
    starts from (none for a fresh run, those up to the checkpoint's step on resume), so a restart after a
    kill or a resume never repeats a step.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            truncate_metrics(os.path.join(args.output_dir, "metrics.jsonl"), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def truncate_metrics(path: str, last_step: int) -> None:
    """Keep only the records of ``path`` (a metrics.jsonl) with ``step <= last_step``; rewritten atomically.
    A line cut short by a kill is dropped."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class BatchCompositionCallback(TrainerCallback):
    """Records what every training micro-batch held on this process, for audits of the buffered sampler
    (Algorithm 1, line 4): ``records`` is a list of ``{"step", "rank", "safety", "helpful"}``.

    Not installed by default: pass it in ``callbacks`` to :class:`BFPOTrainer`, which feeds it from
    ``compute_loss`` and exposes its records as ``trainer.composition``.
    """

    def __init__(self):
        self.records: List[Dict[str, int]] = []

    def observe(self, step: int, rank: int, is_safety: torch.Tensor) -> None:
        """Note one micro-batch: its pairs' ``is_safety`` flags (1 = safety pair, 0 = helpfulness pair)."""
        safety = int(is_safety.sum())
        self.records.append({"step": step, "rank": rank, "safety": safety, "helpful": int(is_safety.numel()) - safety})


class NonFiniteGuard(TrainerCallback):
    """Stop training at the first non-finite gradient (a non-finite loss gives one), before the optimizer
    applies it, with :class:`~bfpo.errors.TrainingDivergedError` naming the step and the last checkpoint.

    Works with any ``transformers.Trainer`` (also TRL's SFTTrainer). Gradients are checked after they are
    reduced across processes, so every rank stops at the same step. With fp16 loss scaling an overflow is
    expected and skipped by the scaler, so only a non-finite loss recorded in ``bad_loss`` stops the run.
    """

    def __init__(self):
        self.bad_loss: Optional[float] = None  # set by BFPOTrainer.training_step

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        bad_grad = (
            not args.fp16
            and bool(grads)
            and not bool(torch.isfinite(torch.stack([g.detach().float().norm() for g in grads])).all())
        )
        if bad_grad or self.bad_loss is not None:
            raise TrainingDivergedError(self.message(args, state.global_step + 1))

    def message(self, args, step: int, what: Optional[str] = None) -> str:
        """The error: the step, what was non-finite, the last good checkpoint, and what to change."""
        from transformers.trainer_utils import get_last_checkpoint

        if what is None:
            what = f"loss is {self.bad_loss}" if self.bad_loss is not None else "gradient norm is not finite"
        last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        kept = f"last good checkpoint: {last}" if last else "no checkpoint was written"
        return (
            f"training diverged at step {step}: {what}; no model was saved ({kept}). "
            "Lower learning_rate or raise tau, then start again (or --resume from the checkpoint)."
        )


def tokenized_pairs(dataset, tokenizer, args: BFPOConfig, name: str) -> List[Dict]:
    """The trainer's input as tokenised pairs: returned as is when already tokenised
    (``bfpo.data.tokenize_pairs`` output), else read as TRL's preference format plus the two safety-label
    columns (:func:`bfpo.data.adapters.from_trl`) and tokenised with the tokenizer's chat template, as
    TRL's DPOTrainer does."""
    rows = list(dataset)
    if not rows or "chosen_ids" in rows[0]:
        return rows
    from bfpo.data.adapters import records_from_trl_dataset
    from bfpo.data.tokenize import tokenize_pairs

    if tokenizer is None:
        raise ValueError(f"{name} holds text: pass processing_class (the tokenizer) to tokenise it")
    examples, _ = tokenize_pairs(
        records_from_trl_dataset(rows, name),
        tokenizer,
        args.max_length,
        args.max_prompt_length,
        desc=f"tokenizing {name}",
    )
    return examples


def train_or_restore(trainer: Trainer, checkpoint: Optional[str]):
    """``trainer.train(resume_from_checkpoint=checkpoint)``, except when the checkpoint is already at the
    run's last step (a run killed while saving its final model): then its weights and state are loaded and
    no step is taken, where transformers would train past ``max_steps``. Works for any ``Trainer``."""
    if checkpoint:
        from transformers.trainer_callback import TrainerState

        state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        target = trainer.args.max_steps if trainer.args.max_steps > 0 else state.max_steps
        if target and state.global_step >= target:
            trainer._load_from_checkpoint(checkpoint)
            trainer.state = state
            logger.info("%s is at the last step (%d): weights restored, no further step", checkpoint, target)
            return None
    return trainer.train(resume_from_checkpoint=checkpoint)


class BFPOTrainer(Trainer):
    """Preference trainer for BFPO (Eq. 15), DPO (Eq. 4) and IPO on tokenised pairs.

    Args:
        model: a causal LM (``PreTrainedModel``, optionally a PEFT model).
        args: :class:`BFPOConfig`.
        train_dataset: a ``datasets.Dataset`` (or list of dicts) in TRL's preference format
            (``prompt``/``chosen``/``rejected``, text or messages) plus ``safe_chosen``/``safe_rejected``
            columns, tokenised here with the chat template; or tokenised pairs (``tokenize_pairs`` output).
        eval_dataset: the same, optional.
        processing_class: the tokenizer (saved with the model).
        ref_model: an explicit reference model for on-the-fly reference log-probs (optional).
    """

    def __init__(
        self,
        model,
        args: BFPOConfig,
        train_dataset: List[Dict],
        eval_dataset: Optional[List[Dict]] = None,
        processing_class=None,
        ref_model=None,
        callbacks=None,
        **kwargs,
    ):
        if not isinstance(args, BFPOConfig):
            raise TypeError("BFPOTrainer needs a BFPOConfig")
        train_dataset = tokenized_pairs(train_dataset, processing_class, args, "train_dataset")
        if eval_dataset is not None:
            eval_dataset = tokenized_pairs(eval_dataset, processing_class, args, "eval_dataset")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.is_peft = base is not model
        add_response_logps_forward(base, args.logps_chunk_size)
        if args.disable_dropout:
            disable_dropout(model)
            if ref_model is not None:
                disable_dropout(ref_model)
        if args.trainable and not self.is_peft:
            select_trainable(model, args.trainable)
        pad_id = getattr(processing_class, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(processing_class, "eos_token_id", None) or 0
        collator = PairCollator(
            pad_token_id=pad_id, pad_to_multiple_of=args.pad_to_multiple_of, padding_free=args.padding_free
        )
        self.guard = NonFiniteGuard()
        callbacks = list(callbacks or []) + [JsonlLogCallback(), self.guard]
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        # compute_loss returns a per-micro-batch mean; let Trainer scale it for gradient accumulation
        self.model_accepts_loss_kwargs = False
        if (
            args.fp32_trainable_params
            and (args.bf16 or args.fp16)
            and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        ):
            upcast_trainable(model)
        self._metrics: Dict[str, Dict[str, List[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.ref_model = None
        if args.precompute_ref_log_probs:
            self.train_dataset = self._with_reference(self.train_dataset, "train")
            if self.eval_dataset is not None:
                self.eval_dataset = self._with_reference(self.eval_dataset, "eval")
        elif not self.is_peft:
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(base)
            add_response_logps_forward(self.ref_model, args.logps_chunk_size)
            self.ref_model.requires_grad_(False).eval()
            self.ref_model.to(self.args.device)
        self._log_setup()

    @property
    def composition(self) -> Optional[List[Dict[str, int]]]:
        """What every training micro-batch held on this process: the records of the
        :class:`BatchCompositionCallback` among the trainer's callbacks, or None when there is none."""
        recorders = self._composition_recorders()
        return recorders[0].records if recorders else None

    def _composition_recorders(self) -> List[BatchCompositionCallback]:
        """The :class:`BatchCompositionCallback` s among the callbacks (also those added with ``add_callback``)."""
        return [cb for cb in self.callback_handler.callbacks if isinstance(cb, BatchCompositionCallback)]

    # ----------------------------------------------------------------------------------- set-up
    def _log_setup(self) -> None:
        a = self.args
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        n_total = sum(p.numel() for p in self.model.parameters())
        msg = (
            f"loss={a.loss} tau={a.tau} trainable={n_train}/{n_total} buffered={a.buffered} "
            f"precomputed_ref={a.precompute_ref_log_probs}"
        )
        if a.loss == "bfpo":
            msg += " g_I per Figure-3 case: " + ", ".join(f"{k}={v:+.3f}" for k, v in a.case_labels().items())
        logger.info(msg)

    def _autocast_dtype(self):
        if self.args.bf16:
            return torch.bfloat16
        if self.args.fp16:
            return torch.float16
        return None

    def _reference_settings(self, model) -> Dict:
        """What, besides the model and the token ids, changes the reference log-probs (the cache key)."""
        args = self.args
        return {
            "autocast": str(self._autocast_dtype()),
            "param_dtype": str(next(model.parameters()).dtype),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "padding_free": args.padding_free,
            "max_length": args.max_length,
            "max_prompt_length": args.max_prompt_length,
            "logps_chunk_size": args.logps_chunk_size,
            "pad_to_multiple_of": args.pad_to_multiple_of,
        }

    def _with_reference(self, examples: List[Dict], split: str) -> List[Dict]:
        """Attach precomputed reference log-probs (from the on-disk cache when it has them)."""
        if all(k in examples[0] for k in REF_KEYS):
            return examples
        unwrapped = self.accelerator.unwrap_model(self.model)
        cache_dir = self.args.ref_cache_dir or default_cache_dir()
        key = cache_key(unwrapped, examples, self._reference_settings(unwrapped))
        path = os.path.join(cache_dir, f"{key}.pt")
        cached = load_cached(Path(path), len(examples))
        if cached is None:
            world, rank = self.accelerator.num_processes, self.accelerator.process_index
            mine = list(range(rank, len(examples), world))
            if self.is_deepspeed_enabled:
                # before train() the DeepSpeed engine does not exist yet (ZeRO-3 params are still sharded):
                # score with an inference engine, as TRL's DPOTrainer does
                from trl.trainer.utils import prepare_deepspeed

                model = prepare_deepspeed(unwrapped, self.accelerator)
            else:
                model = unwrapped.to(self.args.device)
            c, r = compute_reference_logps(
                model,
                examples,
                self.data_collator,
                batch_size=self.args.per_device_eval_batch_size,
                device=self.args.device,
                autocast_dtype=self._autocast_dtype(),
                indices=mine,
                desc=f"reference log-probs ({split})",
            )
            if world > 1:
                import torch.distributed as dist

                parts = [None] * world
                dist.all_gather_object(parts, (mine, c, r))
                chosen = torch.zeros(len(examples))
                rejected = torch.zeros(len(examples))
                for idx, pc, pr in parts:
                    chosen[idx], rejected[idx] = pc, pr
            else:
                chosen, rejected = c, r
            if self.accelerator.is_main_process:
                save_cached(Path(path), chosen, rejected)
            logger.info("reference log-probs for %d %s pairs computed and cached at %s", len(examples), split, path)
        else:
            chosen, rejected = cached
            logger.info("reference log-probs for %d %s pairs loaded from %s", len(examples), split, path)
        return attach_reference_logps(examples, chosen, rejected)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.args.buffered:
            return super()._get_train_sampler(dataset)
        from bfpo.data.sampler import BufferedSampler

        return BufferedSampler(
            [bool(ex.get("is_safety", 1)) for ex in dataset],
            batch_size=self.args.per_device_train_batch_size,
            seed=self.args.seed,
        )

    # ------------------------------------------------------------------------------- the loss
    def training_step(self, model, inputs, num_items_in_batch=None):
        """Transformers' step, noting the first non-finite loss for :class:`NonFiniteGuard`, which stops
        the run before the optimizer step (raising here could leave other ranks waiting in a collective)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.guard.bad_loss is None and not bool(torch.isfinite(loss).all()):
            self.guard.bad_loss = float(loss.detach().float().mean())
        return loss

    def _reference_logps(self, inputs: Dict[str, torch.Tensor], n: int):
        if REF_KEYS[0] in inputs:
            return inputs[REF_KEYS[0]], inputs[REF_KEYS[1]]
        kwargs = model_inputs(inputs)
        with torch.no_grad():
            if self.ref_model is not None:
                out = self.ref_model(**kwargs)
            else:  # LoRA: the base model with adapters disabled is the reference
                with self.accelerator.unwrap_model(self.model).disable_adapter():
                    out = self.model(**kwargs)
        return out.logps[:n].detach(), out.logps[n:].detach()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n = inputs["safe_chosen"].shape[0]
        out = model(**model_inputs(inputs))
        policy_chosen, policy_rejected = out.logps[:n], out.logps[n:]
        ref_chosen, ref_rejected = self._reference_logps(inputs, n)
        b1, b2, b3 = self.args.label_constants()
        res = preference_loss(
            self.args.loss,
            policy_chosen,
            policy_rejected,
            ref_chosen,
            ref_rejected,
            inputs["safe_chosen"],
            inputs["safe_rejected"],
            tau=self.args.tau,
            alpha=None,
            b1=b1,
            b2=b2,
            b3=b3,
            sign_rule=self.args.enforce_label_signs,
            delta=self.args.safedpo_delta,
        )
        loss = res.losses.mean()
        if self.args.safe_nll_weight > 0:
            nll = safe_response_nll(
                policy_chosen,
                policy_rejected,
                out.num_tokens[:n],
                out.num_tokens[n:],
                inputs["safe_chosen"],
                inputs["safe_rejected"],
            )
            loss = loss + self.args.safe_nll_weight * nll.mean()
            self._metrics["train" if model.training else "eval"]["loss/safe_nll"].append(float(nll.detach().mean()))
        self._record(inputs, res, out.num_tokens, model.training)
        return (loss, {"losses": res.losses}) if return_outputs else loss

    def _gather_fields(self, **fields: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The per-pair :data:`METRIC_FIELDS` of every process (one stacked gather), by name, on the CPU."""
        local = torch.stack([fields[name].detach().float() for name in METRIC_FIELDS], dim=1)
        gathered = self.accelerator.gather_for_metrics(local).float().cpu()
        return dict(zip(METRIC_FIELDS, gathered.unbind(dim=1)))

    def _record(self, inputs, res, num_tokens, training: bool) -> None:
        split = "train" if training else "eval"
        if training:
            for recorder in self._composition_recorders():
                recorder.observe(self.state.global_step, self.accelerator.process_index, inputs["is_safety"])
        if self.args.loss == "bfpo":
            correct = torch.sign(res.margins) == torch.sign(res.targets)
        else:
            correct = res.margins > 0
        f = self._gather_fields(
            chosen_reward=res.chosen_rewards,
            rejected_reward=res.rejected_rewards,
            margin=res.margins,
            correct=correct,
            case=case_index(inputs["safe_chosen"], inputs["safe_rejected"]),
            is_safety=inputs["is_safety"],
        )
        m = self._metrics[split]
        m["rewards/chosen"].append(float(f["chosen_reward"].mean()))
        m["rewards/rejected"].append(float(f["rejected_reward"].mean()))
        m["rewards/margins"].append(float(f["margin"].mean()))
        m["rewards/accuracies"].append(float(f["correct"].mean()))
        m["batch/safety_fraction"].append(float(f["is_safety"].mean()))
        m["batch/response_tokens"].append(float(num_tokens.float().sum()))
        for i, (name, _) in enumerate(CASES):
            sel = f["case"] == i
            if sel.any():
                m[f"margins/{name}"].append(float(f["margin"][sel].mean()))
                m[f"count/{name}"].append(float(sel.sum()))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        split = "train" if "loss" in logs or self.model.training else "eval"
        metrics = {}
        for k, v in self._metrics[split].items():
            if v:
                metrics[k] = sum(v) if k.startswith("count/") else sum(v) / len(v)
        if split == "eval":
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
        logs = {**logs, **metrics}
        self._metrics[split].clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, trial) -> None:
        """Transformers' checkpoint, written whole into ``output_dir/.staging/checkpoint-N`` and then renamed
        to ``output_dir/checkpoint-N``: a run killed mid-save leaves only ``.staging`` (cleared by the next
        save), never a half-written ``checkpoint-N`` that ``get_last_checkpoint`` and ``--resume`` would pick.

        The same pieces as ``Trainer._save_checkpoint`` (model, optimizer and scheduler, scaler, RNG
        states, trainer state with the callbacks' exported state), in the same order; a test compares the
        files with the base class's checkpoint. Weights that are not finite stop the run instead.
        """
        bad = nonfinite_parameters(self.accelerator.unwrap_model(model))
        if bad:
            raise TrainingDivergedError(
                self.guard.message(
                    self.args, self.state.global_step, what=f"weights are not finite ({', '.join(bad[:3])})"
                )
            )
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, CHECKPOINT_STAGING)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
        self.accelerator.wait_for_everyone()
        out = os.path.join(staging, name)
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        self.save_model(out, _internal_call=True)
        if self.state.best_global_step:  # with load_best_model_at_end: the best checkpoint so far, once saved
            best = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            if self.state.best_global_step == self.state.global_step or os.path.isdir(best):
                self.state.best_model_checkpoint = best
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(out)
            self._save_scaler(out)
            self._save_rng_state(out)
        if self.args.should_save:
            for cb in [*self.callback_handler.callbacks, self.control]:
                if isinstance(cb, ExportableState):
                    key = type(cb).__name__
                    if isinstance(self.state.stateful_callbacks.get(key), list):
                        self.state.stateful_callbacks[key].append(cb.state())
                    else:
                        self.state.stateful_callbacks[key] = cb.state()
            self.state.save_to_json(os.path.join(out, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every rank's shards and RNG state are in
        if self.args.should_save:
            dst = os.path.join(run_dir, name)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.replace(out, dst)
            shutil.rmtree(staging, ignore_errors=True)
            if self.args.push_to_hub:
                self._push_from_checkpoint(dst)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()
