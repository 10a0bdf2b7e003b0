"""Helpfulness rankers: which of two responses to a prompt is more helpful (I_help of section 2).

Section 4.3 ranks red-teaming responses with PairRM (Jiang et al. 2023). Three rankers share one interface:

* :class:`RuleRanker` - offline heuristic, documented below.
* :class:`RewardModelRanker` - any scalar reward model (``AutoModelForSequenceClassification``).
* :class:`PairRMRanker` - PairRM, a DeBERTa-v3 pairwise ranker, loaded here without the llm-blender
  package (which breaks on transformers >= 5) from the ``llm-blender/PairRM-hf`` checkpoint.

``rank(prompt, a, b)`` returns 0 when ``a`` is more helpful, else 1.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from typing import List, Optional, Sequence

from bfpo.eval.judges import is_refusal


class Ranker(ABC):
    """Pairwise helpfulness preference."""

    name: str = "ranker"

    @abstractmethod
    def rank(self, prompt: str, a: str, b: str) -> int:
        """0 if ``a`` is more helpful than ``b``, else 1."""

    def rank_pairs(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> List[int]:
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"rank_pairs: {len(prompts)} prompts, {len(a)} a-responses, {len(b)} b-responses")
        return [self.rank(p, x, y) for p, x, y in zip(prompts, a, b)]


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def informativeness(text: str) -> int:
    """Number of distinct words: rewards content, not repetition or padding."""
    return len(set(_WORD.findall(text.lower())))


class RuleRanker(Ranker):
    """Offline heuristic: (1) a refusal loses to a non-refusal; (2) otherwise more distinct words wins;
    (3) then the longer text; (4) a full tie goes to ``a``.

    On harmful prompts this prefers the compliant answer, like a helpfulness-only ranker such as PairRM
    would; safety enters BFPO separately through the safety labels (Eq. 14).
    """

    name = "rule"

    def rank(self, prompt, a, b):
        key_a = (not is_refusal(a), informativeness(a), len(a.strip()))
        key_b = (not is_refusal(b), informativeness(b), len(b.strip()))
        return 0 if key_a >= key_b else 1


class RewardModelRanker(Ranker):
    """A scalar reward model scores prompt + response; the higher score wins (ties go to ``a``).

    The pair is rendered with the tokenizer's chat template ([user, assistant]) when it has one, else as a
    text pair. Models with several labels are scored by their last logit (the "good" class by convention).
    """

    name = "reward"

    def __init__(
        self,
        model_dir: Optional[str] = None,
        device: Optional[str] = None,
        batch_size: int = 8,
        max_length: int = 2048,
        model=None,
        tokenizer=None,
    ):
        if model is None:
            if model_dir is None:
                raise ValueError("RewardModelRanker needs model_dir")
            from bfpo.models.generate import load_classifier

            model, tokenizer = load_classifier(model_dir, device)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    def _encode(self, prompts: Sequence[str], responses: Sequence[str]):
        if getattr(self.tokenizer, "chat_template", None):
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
                )
                for p, r in zip(prompts, responses)
            ]
            return self.tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
            )
        return self.tokenizer(
            list(prompts),
            list(responses),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_length,
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> List[float]:
        import torch

        device = next(self.model.parameters()).device
        scores: List[float] = []
        for s in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[s : s + self.batch_size], responses[s : s + self.batch_size])
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            scores.extend(logits[:, -1].tolist())
        return scores

    def rank_pairs(self, prompts, a, b):
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"rank_pairs: {len(prompts)} prompts, {len(a)} a-responses, {len(b)} b-responses")
        sa, sb = self.score(prompts, a), self.score(prompts, b)
        return [0 if x >= y else 1 for x, y in zip(sa, sb)]

    def rank(self, prompt, a, b):
        return self.rank_pairs([prompt], [a], [b])[0]


SOURCE_PREFIX, CAND1_PREFIX, CAND2_PREFIX = "<|source|>", "<|candidate1|>", "<|candidate2|>"


def _pairrm_class():
    """PairRM's architecture: DeBERTa-v2 encoder; a head on [enc(<source>); enc(<candidateX>)] gives each
    candidate a score per task; the logit is mean over tasks of score1 - score2 (> 0: candidate 1 better).
    Parameter names match the ``llm-blender/PairRM-hf`` checkpoint (pretrained_model.*, head_layer.*)."""
    import torch
    from torch import nn
    from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Model, DebertaV2PreTrainedModel

    class PairRMModel(DebertaV2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            hidden, n_tasks = config.hidden_size, getattr(config, "n_tasks", 1)
            drop = getattr(config, "drop_out", 0.0)
            self.pretrained_model = DebertaV2Model(config)
            self.head_layer = nn.Sequential(
                nn.Dropout(drop), nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Dropout(drop), nn.Linear(hidden, n_tasks)
            )
            self.post_init()

        def forward(self, input_ids, attention_mask):
            cfg = self.config
            enc = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)

            def at(token_id):
                # first occurrence of the prefix token in each row
                pos = (input_ids == token_id).int().argmax(dim=1)
                return enc[rows, pos]

            src = at(cfg.source_prefix_id)
            left = self.head_layer(torch.cat([src, at(cfg.cand1_prefix_id)], dim=-1))
            right = self.head_layer(torch.cat([src, at(cfg.cand2_prefix_id)], dim=-1))
            return (left - right).mean(dim=-1)

    return PairRMModel


class PairRMRanker(Ranker):
    """PairRM (``llm-blender/PairRM-hf``) without llm-blender.

    Input per pair: ``<|source|>prompt`` (at most ``source_max_length`` tokens), then
    ``<|candidate1|>a`` and ``<|candidate2|>b`` sharing the remaining budget equally, each encoded with the
    tokenizer's special tokens, as PairRM was trained. PairRM has a position bias, so by default both orders
    are scored and the antisymmetric logit ``(f(a, b) - f(b, a)) / 2`` decides; with ``both_orders=False``
    each pair is shown in a seeded random order instead.
    """

    name = "pairrm"

    def __init__(
        self,
        model_dir: Optional[str] = "llm-blender/PairRM-hf",
        device: Optional[str] = None,
        batch_size: int = 8,
        both_orders: bool = True,
        seed: int = 0,
        source_max_length: int = 1224,
        candidate_max_length: int = 412,
    ):
        from transformers import AutoTokenizer

        from bfpo.models.generate import default_device

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = _pairrm_class().from_pretrained(model_dir)
        cfg = self.model.config
        for attr, tok in (
            ("source_prefix_id", SOURCE_PREFIX),
            ("cand1_prefix_id", CAND1_PREFIX),
            ("cand2_prefix_id", CAND2_PREFIX),
        ):
            if getattr(cfg, attr, None) is None:
                tid = self.tokenizer.convert_tokens_to_ids(tok)
                if tid is None or tid == self.tokenizer.unk_token_id:
                    raise ValueError(
                        f"{model_dir}: tokenizer has no {tok} token and config has no {attr}; "
                        "is this a PairRM checkpoint (llm-blender/PairRM-hf)?"
                    )
                setattr(cfg, attr, tid)
        self.model.to(device or default_device()).eval()
        self.batch_size, self.both_orders = batch_size, both_orders
        self.rng = random.Random(seed)
        self.source_max_length, self.candidate_max_length = source_max_length, candidate_max_length

    def encode(self, prompts: Sequence[str], c1: Sequence[str], c2: Sequence[str]):
        """Token ids of ``<|source|>p <|candidate1|>c1 <|candidate2|>c2`` per pair, right-padded."""
        import torch

        total = self.source_max_length + 2 * self.candidate_max_length
        rows = []
        for p, x, y in zip(prompts, c1, c2):
            src = self.tokenizer.encode(SOURCE_PREFIX + p, max_length=self.source_max_length, truncation=True)
            budget = (total - len(src)) // 2
            ids1 = self.tokenizer.encode(CAND1_PREFIX + x, max_length=budget, truncation=True)
            ids2 = self.tokenizer.encode(CAND2_PREFIX + y, max_length=budget, truncation=True)
            rows.append(src + ids1 + ids2)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return ids, mask

    def logits(self, prompts: Sequence[str], c1: Sequence[str], c2: Sequence[str]) -> List[float]:
        """PairRM logit per pair: > 0 means candidate 1 is better."""
        import torch

        device = next(self.model.parameters()).device
        out: List[float] = []
        for s in range(0, len(prompts), self.batch_size):
            ids, mask = self.encode(
                prompts[s : s + self.batch_size], c1[s : s + self.batch_size], c2[s : s + self.batch_size]
            )
            with torch.no_grad():
                out.extend(self.model(ids.to(device), mask.to(device)).float().tolist())
        return out

    def rank_pairs(self, prompts, a, b):
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"rank_pairs: {len(prompts)} prompts, {len(a)} a-responses, {len(b)} b-responses")
        if self.both_orders:
            fwd, bwd = self.logits(prompts, a, b), self.logits(prompts, b, a)
            return [0 if (f - r) / 2 >= 0 else 1 for f, r in zip(fwd, bwd)]
        swap = [self.rng.random() < 0.5 for _ in prompts]
        first = [y if s else x for x, y, s in zip(a, b, swap)]
        second = [x if s else y for x, y, s in zip(a, b, swap)]
        res = []
        for logit, s in zip(self.logits(prompts, first, second), swap):
            first_wins = logit >= 0
            res.append(0 if first_wins != s else 1)
        return res

    def rank(self, prompt, a, b):
        return self.rank_pairs([prompt], [a], [b])[0]


RANKERS = {"rule": RuleRanker, "reward": RewardModelRanker, "pairrm": PairRMRanker}


def get_ranker(name: str, model: Optional[str] = None, **kw) -> Ranker:
    """Build a ranker by name: rule | reward | pairrm (PairRM defaults to ``llm-blender/PairRM-hf``)."""
    key = name.lower()
    if key not in RANKERS:
        raise ValueError(f"unknown ranker {name!r}; choose one of {', '.join(RANKERS)}")
    if key == "rule":
        return RuleRanker()
    if key == "pairrm":
        return PairRMRanker(model or "llm-blender/PairRM-hf", **kw)
    if model is None:
        raise ValueError("ranker 'reward' needs a model (--ranker-model DIR)")
    return RewardModelRanker(model, **kw)
