"""The "safety world" (issue 4): Table 1 of the paper in miniature, where the truth is known.

Modules: :mod:`~bfpo.experiments.world.generator` (prompts and four response classes),
:mod:`~bfpo.experiments.world.classifier` (text -> class), :mod:`~bfpo.experiments.world.datasets`
(PKU-SafeRLHF / UltraFeedback files loaded through the real adapters), :mod:`~bfpo.experiments.world.measure`
(exact and sampled class masses), :mod:`~bfpo.experiments.world.experiment` (the SFT reference and every
method trained through :mod:`bfpo.train`'s entry points, results.json, figure, table). ``bfpo world`` is
:func:`bfpo.experiments.world.experiment.main`.
"""

from __future__ import annotations

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None):
    from bfpo.experiments.world.experiment import main as _main

    return _main(argv)
