"""The world's training data in the trainer's real formats, read back through the real adapters.

* Safety set: PKU-SafeRLHF rows (``prompt, response_0, response_1, is_response_{i}_safe,
  better_response_id, safer_response_id``) for harmful AND benign prompts, written to jsonl and loaded with
  :func:`bfpo.data.adapters.load_pairs` (schema detection, validation, ``chosen`` = more helpful).
* Helpfulness set: UltraFeedback-binarized rows (``prompt, prompt_id, chosen/rejected`` message lists,
  ``score_chosen, score_rejected``) on benign prompts, all responses safe (section 4.2).

Annotation rules of the world (the "truth" that labels the pairs):

* helpfulness on harmful prompts: d > a > c > b (:data:`bfpo.experiments.world.generator.HELPFULNESS`); on benign
  prompts a > b;
* safety labels are the classes' true safety (a, b safe; c, d unsafe);
* ``safer_response_id``: a safe response is safer than an unsafe one; between two responses of the same
  safety the annotator calls the LESS helpful one safer (it says less: a refusal over an answer, vague harm
  over detailed harm). This is what the DPO-S and naive-mix baselines treat as the win response.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from bfpo.data.adapters import load_pairs
from bfpo.data.records import PairRecord
from bfpo.experiments.world import generator as g

#: Unordered class pairs of harmful prompts in the safety set, equally likely by default.
HARMFUL_PAIRS: Tuple[Tuple[str, str], ...] = (("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d"))


def more_helpful(x: str, y: str, kind: str) -> str:
    """The more helpful of two classes for a prompt of ``kind``."""
    order = g.HELPFULNESS if kind == "harmful" else ("a", "b")
    return x if order.index(x) < order.index(y) else y


def safer(x: str, y: str, kind: str) -> str:
    """The class the annotator calls safer (see the module docstring)."""
    if g.SAFE[x] != g.SAFE[y]:
        return x if g.SAFE[x] else y
    return y if more_helpful(x, y, kind) == x else x


def pku_row(prompt: g.Prompt, pair: Tuple[str, str], rng: random.Random) -> Dict:
    """One PKU-SafeRLHF row for ``prompt`` with responses of the two classes in ``pair`` (order random)."""
    classes = list(pair)
    rng.shuffle(classes)
    responses = [g.response(prompt, c, rng) for c in classes]
    better = classes.index(more_helpful(*classes, prompt.kind))
    safest = classes.index(safer(*classes, prompt.kind))
    return {
        "prompt": prompt.text,
        "response_0": responses[0],
        "response_1": responses[1],
        "is_response_0_safe": g.SAFE[classes[0]],
        "is_response_1_safe": g.SAFE[classes[1]],
        "better_response_id": better,
        "safer_response_id": safest,
        "world_kind": prompt.kind,
        "world_classes": classes,
    }


def ultrafeedback_row(prompt: g.Prompt, rng: random.Random, index: int) -> Dict:
    """One UltraFeedback-binarized row: a helpful answer (a) chosen over a refusal (b), both safe."""
    user = {"role": "user", "content": prompt.text}
    return {
        "prompt": prompt.text,
        "prompt_id": f"world-{index:06d}",
        "chosen": [user, {"role": "assistant", "content": g.response(prompt, "a", rng)}],
        "rejected": [user, {"role": "assistant", "content": g.response(prompt, "b", rng)}],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    }


def safety_rows(
    harmful: Sequence[g.Prompt],
    benign: Sequence[g.Prompt],
    n: int,
    harmful_fraction: float,
    rng: random.Random,
    pair_weights: Sequence[float] | None = None,
) -> List[Dict]:
    """``n`` PKU rows: a ``harmful_fraction`` share on harmful prompts (class pairs drawn with
    ``pair_weights`` over :data:`HARMFUL_PAIRS`), the rest on benign prompts (a vs b)."""
    if not 0.0 <= harmful_fraction <= 1.0:
        raise ValueError(f"harmful_fraction must be in [0, 1], got {harmful_fraction}")
    n_harm = round(n * harmful_fraction)
    rows = [
        pku_row(rng.choice(list(harmful)), rng.choices(HARMFUL_PAIRS, weights=pair_weights)[0], rng)
        for _ in range(n_harm)
    ]
    rows += [pku_row(rng.choice(list(benign)), ("a", "b"), rng) for _ in range(n - n_harm)]
    rng.shuffle(rows)
    return rows


def write_jsonl(rows: Sequence[Dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def build_datasets(
    harmful: Sequence[g.Prompt],
    benign: Sequence[g.Prompt],
    out_dir: Path,
    n_safety: int,
    n_helpful: int,
    harmful_fraction: float,
    seed: int,
    pair_weights: Sequence[float] | None = None,
) -> Tuple[List[PairRecord], List[PairRecord]]:
    """Write ``safety.jsonl`` (PKU-SafeRLHF) and ``helpful.jsonl`` (UltraFeedback) into ``out_dir`` and load
    them back through :func:`load_pairs` with schema detection; returns (safety, helpful) records."""
    rng = random.Random(f"world-data:{seed}")
    safety_path = write_jsonl(
        safety_rows(harmful, benign, n_safety, harmful_fraction, rng, pair_weights), out_dir / "safety.jsonl"
    )
    helpful_path = write_jsonl(
        [ultrafeedback_row(rng.choice(list(benign)), rng, i) for i in range(n_helpful)], out_dir / "helpful.jsonl"
    )
    safety = load_pairs(str(safety_path))
    helpful = load_pairs(str(helpful_path))
    bad = [r.metadata.get("origin") for r in safety if r.source != "pku_saferlhf"] + [
        r.metadata.get("origin") for r in helpful if r.source != "ultrafeedback"
    ]
    if bad:
        raise ValueError(f"world data detected with the wrong schema: {bad[:3]}")
    return safety, helpful
