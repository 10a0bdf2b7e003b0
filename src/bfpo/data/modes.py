"""Training sets of BFPO and of the paper's baselines (Table 1, Table 4) and the SFT stage data (section 4.2).

=================  ====================================================  =========
mode               records (chosen = win response)                       buffered
=================  ====================================================  =========
``bfpo``           safety + helpful, chosen = MORE HELPFUL (y_hw)         yes
``bfpo_no_buffer`` the same records (Table 4, "BFPO w/o buffer"); the      no
                   helpful set may be empty (section 4.3's red-team run)
``dpo_h``          helpful only (DPO-H)                                   no
``dpo_s``          safety only, chosen = SAFER response (DPO-S)           no
``mix``            safety (safer wins) + helpful (more helpful wins),     no
                   shuffled together (the naive mix of DPO / IPO)
=================  ====================================================  =========

"Buffered" is Algorithm 1's line 4: every batch has as many safety as helpful pairs
(:class:`bfpo.data.sampler.BufferedSampler`).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, replace
from typing import Dict, List, Sequence

from bfpo.data.records import PairRecord
from bfpo.objective import CASES

MODES = ("bfpo", "bfpo_no_buffer", "dpo_h", "dpo_s", "mix")


def case_of(rec: PairRecord) -> str:
    """The Figure-3 case name of a pair, from (I_safe(chosen), I_safe(rejected)) with labels >= 0.5 safe."""
    key = (int(float(rec.safe_chosen) >= 0.5), int(float(rec.safe_rejected) >= 0.5))
    return next(name for name, labels in CASES if labels == key)


@dataclass
class TrainingSet:
    """The records one training mode sees, and whether its batches must be balanced (buffered)."""

    records: List[PairRecord]
    buffered: bool
    mode: str

    def __len__(self) -> int:
        return len(self.records)

    def is_safety(self) -> List[bool]:
        """Per record, whether it belongs to the safety dataset (the input of the buffered sampler)."""
        return [r.kind == "safety" for r in self.records]

    def counts(self) -> Dict[str, int]:
        """Counts: ``total``, per kind (``safety``, ``helpful``) and per Figure-3 case (``safe_unsafe``, ...)."""
        out: Dict[str, int] = {"total": len(self.records), "safety": 0, "helpful": 0}
        out.update({name: 0 for name, _ in CASES})
        for rec in self.records:
            out[rec.kind] = out.get(rec.kind, 0) + 1
            out[case_of(rec)] += 1
        return out


def _copy(rec: PairRecord) -> PairRecord:
    """A copy that shares no mutable state (prompt messages, metadata) with ``rec``."""
    return replace(rec, prompt=copy.deepcopy(rec.prompt), metadata=copy.deepcopy(rec.metadata))


def safer_first(rec: PairRecord) -> PairRecord:
    """A copy of ``rec`` whose ``chosen`` is the SAFER response (the win response of DPO-S and the mix).

    Uses ``metadata['safer']`` ('chosen' | 'rejected', set by the PKU-SafeRLHF adapter) when present, else
    the safety labels; a tie keeps the order. Labels move with their responses; ``metadata['safer']``
    becomes 'chosen' and ``metadata['swapped']`` records whether the responses were exchanged.
    """
    out = _copy(rec)
    safer = rec.metadata.get("safer")
    if safer in ("chosen", "rejected"):
        swap = safer == "rejected"
    else:
        swap = float(rec.safe_rejected) > float(rec.safe_chosen)
    if swap:
        out.chosen, out.rejected = rec.rejected, rec.chosen
        out.safe_chosen, out.safe_rejected = rec.safe_rejected, rec.safe_chosen
    out.metadata["safer"] = "chosen"
    out.metadata["swapped"] = swap
    return out


def _need(records: Sequence[PairRecord], name: str, mode: str) -> None:
    if not records:
        raise ValueError(f"mode {mode!r} needs {name} pairs, but the {name} set is empty")


def build_training_set(safety: List[PairRecord], helpful: List[PairRecord], mode: str, seed: int = 0) -> TrainingSet:
    """The training set of one mode of Table 1 / Table 4 (see the module table).

    The inputs are not modified; the returned records are copies. Record ``kind`` is kept, so
    :meth:`TrainingSet.is_safety` feeds the buffered sampler.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    if mode in ("bfpo", "bfpo_no_buffer"):
        _need(safety, "safety", mode)
        if mode == "bfpo":  # the buffer balances two sets; unbuffered BFPO may run on safety pairs alone,
            _need(helpful, "helpful", mode)  # as section 4.3 does with its 1.5K red-team pairs
        return TrainingSet([_copy(r) for r in [*safety, *helpful]], buffered=mode == "bfpo", mode=mode)
    if mode == "dpo_h":
        _need(helpful, "helpful", mode)
        return TrainingSet([_copy(r) for r in helpful], buffered=False, mode=mode)
    if mode == "dpo_s":
        _need(safety, "safety", mode)
        return TrainingSet([safer_first(r) for r in safety], buffered=False, mode=mode)
    _need(safety, "safety", mode)
    _need(helpful, "helpful", mode)
    records = [safer_first(r) for r in safety] + [_copy(r) for r in helpful]
    random.Random(seed).shuffle(records)
    return TrainingSet(records, buffered=False, mode=mode)


def _as_messages(prompt) -> List[Dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def sft_examples(safety: List[PairRecord], helpful: List[PairRecord]) -> List[Dict[str, list]]:
    """The SFT stage data of section 4.2, in TRL's conversational prompt-completion format.

    Helpful pairs give their chosen (more helpful) response; each safety pair gives its SAFER response
    when that response is safe (label >= 0.5), so the SFT model never imitates an unsafe answer. Each
    example is ``{"prompt": [messages...], "completion": [{"role": "assistant", "content": ...}]}``.
    """
    examples = []
    for rec in helpful:
        examples.append(
            {"prompt": _as_messages(rec.prompt), "completion": [{"role": "assistant", "content": rec.chosen}]}
        )
    for rec in safety:
        safe = safer_first(rec)
        if float(safe.safe_chosen) >= 0.5:
            examples.append(
                {"prompt": _as_messages(safe.prompt), "completion": [{"role": "assistant", "content": safe.chosen}]}
            )
    return examples
