"""The "safety world" (issue 4): Table 1 of the paper in miniature, where the truth is known.

Modules: :mod:`~bfpo.world.generator` (prompts and four response classes), :mod:`~bfpo.world.classifier`
(text -> class), :mod:`~bfpo.world.datasets` (PKU-SafeRLHF / UltraFeedback files loaded through the real
adapters), :mod:`~bfpo.world.measure` (exact and sampled class masses), :mod:`~bfpo.world.experiment`
(SFT reference, every method through ``BFPOTrainer``, results.json, figure, table). ``bfpo world`` is
:func:`bfpo.world.experiment.main`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bfpo.world.experiment import add_arguments as _add

    _add(parser)


def main(args: argparse.Namespace):
    from bfpo.world.experiment import main as _main

    return _main(args)
