"""Stand-ins for the ``TrainingArguments`` and ``TrainerState`` a ``TrainerCallback`` is handed, so the
callbacks' tests (checkpoint selection, the evaluation curve) can call them step by step without a Trainer.
Test files import this module by name; pytest puts ``tests/`` on ``sys.path``."""


class Args:
    """What the callbacks read of ``TrainingArguments``: ``output_dir``."""

    def __init__(self, out):
        self.output_dir = str(out)


class State:
    """What the callbacks read of ``TrainerState``: the step and whether this process writes files."""

    def __init__(self, step):
        self.global_step, self.is_world_process_zero = step, True
