"""Pair collator: one concatenated batch [chosen_1..chosen_B, rejected_1..rejected_B] for one forward.

Padded (default): 2B rows right-padded to the longest sequence. Padding-free (``padding_free=True``): the
2B sequences back to back in ONE row of real tokens, with ``position_ids`` restarting at 0 for each
sequence, ``seq_ids`` (sequence index per token) and ``cu_seqlens`` (boundaries, length 2B+1); the model
never computes a padding position (see :mod:`bfpo.train.logps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")
#: batch keys that go to the (patched) model forward
MODEL_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask", "seq_ids", "cu_seqlens")


def model_inputs(batch: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of a collated batch that the patched model forward takes."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}


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
    padding_free: bool = False

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        seqs, resp = [], []
        for side in ("chosen_ids", "rejected_ids"):
            for f in features:
                p, r = list(f["prompt_ids"]), list(f[side])
                seqs.append(p + r)
                resp.append([0] * len(p) + [1] * len(r))
        batch = self._packed(seqs, resp) if self.padding_free else self._padded(seqs, resp)
        batch.update(
            {
                "safe_chosen": torch.tensor([float(f["safe_chosen"]) for f in features]),
                "safe_rejected": torch.tensor([float(f["safe_rejected"]) for f in features]),
                "is_safety": torch.tensor([int(f.get("is_safety", 1)) for f in features]),
            }
        )
        if all(k in features[0] for k in REF_KEYS):
            for k in REF_KEYS:
                batch[k] = torch.tensor([float(f[k]) for f in features], dtype=torch.float32)
        return batch

    @staticmethod
    def _packed(seqs: List[List[int]], resp: List[List[int]]) -> Dict[str, torch.Tensor]:
        lens = [len(s) for s in seqs]
        input_ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
        response_mask = torch.tensor([m for r in resp for m in r], dtype=torch.long)
        cu = torch.tensor([0] + lens, dtype=torch.long).cumsum(0)
        # the first token of a sequence has no context of its own: never a target (already 0 for a
        # non-empty prompt; this also keeps an empty-prompt sequence from being scored across a boundary)
        response_mask[cu[:-1][torch.tensor(lens) > 0]] = 0
        seq_ids = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor(lens))
        position_ids = torch.arange(int(cu[-1])) - cu[:-1].repeat_interleave(torch.tensor(lens))
        return {
            "input_ids": input_ids[None],
            "position_ids": position_ids[None],
            "response_mask": response_mask[None],
            "seq_ids": seq_ids[None],
            "cu_seqlens": cu,
        }

    def _padded(self, seqs: List[List[int]], resp: List[List[int]]) -> Dict[str, torch.Tensor]:
        width = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        n = len(seqs)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        response_mask = torch.zeros((n, width), dtype=torch.long)
        for i, (s, r) in enumerate(zip(seqs, resp)):
            input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[i, : len(s)] = 1
            response_mask[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
