"""Evaluation (section 4.1): prompt sets, safety judges, lm-eval tasks, ``bfpo evaluate``, ``bfpo judge``
and ``bfpo report``."""
