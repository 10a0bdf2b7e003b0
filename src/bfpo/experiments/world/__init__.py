"""The "safety world" (issue 4): Table 1 of the paper in miniature, where the truth is known.

Modules: :mod:`~bfpo.experiments.world.generator` (prompts and four response classes), :mod:`~bfpo.experiments.world.classifier`
(text -> class), :mod:`~bfpo.experiments.world.datasets` (PKU-SafeRLHF / UltraFeedback files loaded through the real
adapters), :mod:`~bfpo.experiments.world.measure` (exact and sampled class masses), :mod:`~bfpo.experiments.world.experiment`
(SFT reference, every method through ``BFPOTrainer``, results.json, figure, table). ``bfpo world`` is
:func:`bfpo.experiments.world.experiment.main`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bfpo.experiments.world.experiment import add_arguments as _add

    _add(parser)


def main(args: argparse.Namespace):
    from bfpo.experiments.world.experiment import main as _main

    return _main(args)
