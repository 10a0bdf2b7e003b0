"""Pair collator: one concatenated batch [chosen_1..chosen_B, rejected_1..rejected_B] for one forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass
class PairCollator:
    """Collate tokenised pairs (``bfpo.data.tokenize.tokenize_pair`` output) into model inputs.

    Each example gives two sequences, prompt+chosen and prompt+rejected; the 2B sequences are right-padded
    to the longest in the batch (not to ``max_length``), optionally to a multiple of
    ``pad_to_multiple_of``. ``response_mask`` is 1 on response tokens, 0 on prompt and padding.
    Safety labels, the source kind and precomputed reference log-probs (when present) pass through.
    """

    pad_token_id: int
    pad_to_multiple_of: Optional[int] = None

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        seqs, resp = [], []
        for side in ("chosen_ids", "rejected_ids"):
            for f in features:
                p, r = list(f["prompt_ids"]), list(f[side])
                seqs.append(p + r)
                resp.append([0] * len(p) + [1] * len(r))
        width = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        n = len(seqs)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        response_mask = torch.zeros((n, width), dtype=torch.long)
        for i, (s, r) in enumerate(zip(seqs, resp)):
            input_ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[i, :len(s)] = 1
            response_mask[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
            "safe_chosen": torch.tensor([float(f["safe_chosen"]) for f in features]),
            "safe_rejected": torch.tensor([float(f["safe_rejected"]) for f in features]),
            "is_safety": torch.tensor([int(f.get("is_safety", 1)) for f in features]),
        }
        if all(k in features[0] for k in REF_KEYS):
            for k in REF_KEYS:
                batch[k] = torch.tensor([float(f[k]) for f in features], dtype=torch.float32)
        return batch
