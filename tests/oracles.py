"""Test oracles: slow, obviously correct versions of quantities that production code computes fast.

Kept out of ``src/bfpo`` (issue #14: test helpers do not live in production modules). Test files import
this module by name (``from oracles import ...``); pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import torch


def reference_logps_full_logits(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Summed response log-probs computed the plain way (full ``[batch, seq, vocab]`` logits), the oracle
    for :func:`bfpo.train.logps.add_response_logps_forward`'s tiled path. Called without
    ``response_mask``, a patched model runs its original forward, so this works on patched models too."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (lp * response_mask[:, 1:]).sum(-1)


def random_pairs(n: int = 4, seed: int = 1, vocab: int = 260) -> list:
    """``n`` tokenised pairs of random ids in [10, vocab), varied lengths, alternating safety labels."""
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        return torch.randint(10, vocab, (k,), generator=g).tolist()

    return [
        dict(
            prompt_ids=ids(2, 9),
            chosen_ids=ids(3, 20),
            rejected_ids=ids(3, 20),
            safe_chosen=float(i % 2),
            safe_rejected=0.0,
            is_safety=i % 2,
        )
        for i in range(n)
    ]
