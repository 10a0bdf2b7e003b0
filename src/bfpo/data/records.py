"""The canonical preference-pair record that every adapter produces and the trainer consumes.

``chosen`` is always the response that WINS under the training mode. For BFPO that is the MORE HELPFUL
response y_hw, whatever its safety (the safety labels enter the loss through g_I, Eq. 14); for the DPO
baselines built by :mod:`bfpo.data.modes` it is the win response of that baseline (e.g. the safer one
for DPO-S).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Union

from bfpo.errors import DataValidationError, UserInputError  # noqa: F401 - DataValidationError re-exported

Messages = List[Dict[str, str]]
Prompt = Union[str, Messages]


@dataclass
class PairRecord:
    """One preference pair.

    Attributes:
        prompt: the user prompt, as text or as chat messages (``[{"role": ..., "content": ...}]``)
            ending with the user turn.
        chosen: the more helpful response (y_hw) for BFPO; the win response for baselines.
        rejected: the other response.
        safe_chosen: I_safe(chosen), bool or float in [0, 1].
        safe_rejected: I_safe(rejected), bool or float in [0, 1].
        source: where the pair came from ("pku_saferlhf", "ultrafeedback", a file name, ...).
        kind: "safety" or "helpful": which of Algorithm 1's datasets the pair belongs to.
        metadata: anything else worth keeping (harm categories, severity, provenance).
    """

    prompt: Prompt
    chosen: str
    rejected: str
    safe_chosen: float = 1.0
    safe_rejected: float = 1.0
    source: str = ""
    kind: str = "safety"
    metadata: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "record") -> "PairRecord":
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in d]
        if missing:
            raise DataValidationError(f"{where}: missing field(s) {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: v for k, v in d.items() if k not in known}
        rec = cls(**{k: v for k, v in d.items() if k in known})
        if extra:
            rec.metadata = {**rec.metadata, **extra}
        return rec

    def prompt_text(self) -> str:
        """The prompt as plain text (the last user turn of a message list)."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m.get("content", "") for m in self.prompt if m.get("role") == "user"]
        return users[-1] if users else ""


def _label(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataValidationError(
            f"{where}: field '{name}' must be a bool or a number in [0, 1], got {value!r}"
        ) from None
    if math.isnan(x) or not 0.0 <= x <= 1.0:
        raise DataValidationError(f"{where}: field '{name}' must be in [0, 1], got {value!r}")
    return x


def validate_record(rec: PairRecord, where: str = "record") -> PairRecord:
    """Check one record and normalise its labels to floats; raise :class:`DataValidationError`.

    ``where`` should name the file and row (e.g. ``"pku.jsonl row 17"``) so the error says where to look.
    Checks: prompt present and well-formed, responses non-empty strings, chosen != rejected, labels in
    [0, 1], kind is 'safety' or 'helpful'.
    """
    if isinstance(rec.prompt, str):
        if not rec.prompt.strip():
            raise DataValidationError(f"{where}: field 'prompt' is empty")
    elif isinstance(rec.prompt, list):
        if not rec.prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in rec.prompt):
            raise DataValidationError(
                f"{where}: field 'prompt' must be text or a non-empty list of {{'role', 'content'}} messages"
            )
    else:
        raise DataValidationError(
            f"{where}: field 'prompt' must be text or chat messages, got {type(rec.prompt).__name__}"
        )
    for name in ("chosen", "rejected"):
        value = getattr(rec, name)
        if not isinstance(value, str):
            raise DataValidationError(f"{where}: field '{name}' must be text, got {type(value).__name__}")
        if not value.strip():
            raise DataValidationError(f"{where}: field '{name}' is empty")
    if rec.chosen.strip() == rec.rejected.strip():
        raise DataValidationError(f"{where}: fields 'chosen' and 'rejected' are identical")
    rec.safe_chosen = _label(rec.safe_chosen, where, "safe_chosen")
    rec.safe_rejected = _label(rec.safe_rejected, where, "safe_rejected")
    if rec.kind not in ("safety", "helpful"):
        raise DataValidationError(f"{where}: field 'kind' must be 'safety' or 'helpful', got {rec.kind!r}")
    return rec
