"""Safety labels from a noisy, calibrated classifier (issue 13, part 3): hard, soft and thresholded.

The world knows every response's true safety. A user with a safety classifier instead of human labels
has a probability per response. Here the classifier observes ``z = I_safe + N(0, sigma^2)`` and reports the
Bayes posterior ``P(safe | z)`` under the true base rate of safe responses in the set, so its probabilities
are calibrated by construction (among responses given p, a fraction p is safe, in expectation). Three
labelings of the same safety pairs:

* ``hard``: the true labels (what the world's other methods use);
* ``soft``: the classifier's probabilities, used as they are (Proposition 3.3 is linear in I_safe, so g_I
  takes them; SafeDPO takes the Bernoulli expectation, :func:`bfpo.objective.safedpo_loss`);
* ``thresholded``: the same probabilities cut at 0.5.

Only the safety set is relabelled; the helpfulness set keeps I_safe = 1 for both responses (section 4.2).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Dict, List, Sequence, Tuple

from bfpo.data.records import PairRecord

HOW = ("hard", "soft", "thresholded")


def posterior_safe(z: float, sigma: float, prior: float) -> float:
    """``P(safe | z)`` for ``z = I_safe + N(0, sigma^2)`` with ``P(safe) = prior``."""
    if not sigma > 0:
        raise ValueError(f"sigma (the classifier's noise) must be > 0, got {sigma}")
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    # log-odds: log prior/(1-prior) + [(z)^2 - (z-1)^2] / (2 sigma^2) = ... + (2z - 1) / (2 sigma^2)
    logit = math.log(prior / (1.0 - prior)) + (2.0 * z - 1.0) / (2.0 * sigma**2)
    return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0


def classifier_probabilities(truth: Sequence[float], sigma: float, seed: int) -> List[float]:
    """One calibrated probability per true binary label (base rate = the labels' mean)."""
    prior = sum(truth) / len(truth)
    prior = min(max(prior, 1e-6), 1 - 1e-6)
    rng = random.Random(f"world-classifier:{seed}:{sigma}")
    return [posterior_safe(float(t) + rng.gauss(0.0, sigma), sigma, prior) for t in truth]


def relabel(records: Sequence[PairRecord], how: str, sigma: float, seed: int) -> Tuple[List[PairRecord], Dict]:
    """Copies of ``records`` with safety labels replaced per ``how`` (see :data:`HOW`), and statistics.

    Statistics (over the 2 x len(records) responses): ``error_rate`` of the thresholded labels, ``brier``
    score and mean ``abs_error`` of the probabilities, and ``calibration``: the mean true safety in five
    probability bins ``[0, .2), ..., [.8, 1]`` (``None`` for an empty bin) next to the bins' mean probability.
    """
    if how not in HOW:
        raise ValueError(f"unknown labeling {how!r}; expected one of {', '.join(HOW)}")
    truth = [float(v) for r in records for v in (r.safe_chosen, r.safe_rejected)]
    if any(t not in (0.0, 1.0) for t in truth):
        raise ValueError("relabel needs the world's true (binary) labels as input")
    probs = classifier_probabilities(truth, sigma, seed)
    thresholded = [1.0 if p >= 0.5 else 0.0 for p in probs]
    new = {"hard": truth, "soft": probs, "thresholded": thresholded}[how]
    out = [
        replace(r, safe_chosen=new[2 * i], safe_rejected=new[2 * i + 1], metadata=dict(r.metadata))
        for i, r in enumerate(records)
    ]
    bins: List[Dict] = []
    for lo in (0.0, 0.2, 0.4, 0.6, 0.8):
        sel = [(p, t) for p, t in zip(probs, truth) if lo <= p < lo + 0.2 or (lo == 0.8 and p == 1.0)]
        bins.append(
            {
                "bin": [lo, round(lo + 0.2, 1)],
                "n": len(sel),
                "mean_prob": sum(p for p, _ in sel) / len(sel) if sel else None,
                "frac_safe": sum(t for _, t in sel) / len(sel) if sel else None,
            }
        )
    stats = {
        "sigma": sigma,
        "responses": len(truth),
        "error_rate": sum(t != h for t, h in zip(truth, thresholded)) / len(truth),
        "brier": sum((p - t) ** 2 for p, t in zip(probs, truth)) / len(truth),
        "abs_error": sum(abs(p - t) for p, t in zip(probs, truth)) / len(truth),
        "calibration": bins,
    }
    return out, stats
