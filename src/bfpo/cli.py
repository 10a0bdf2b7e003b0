"""The ``bfpo`` command: one thin entry point that parses arguments and calls a pipeline.

Each sub-command lives in its own module, which defines ``main(argv)``: it reads its settings with
:func:`bfpo.args.parse` (dataclasses, ``--config FILE.yaml``, ``--field value``; ``bfpo COMMAND --help`` lists
every field). Modules are imported only when their command runs, so ``bfpo --help`` stays fast (it imports
neither torch nor transformers).

Errors: a :class:`bfpo.errors.BfpoUserError` (or an OSError about a named path) is printed as one
``error: ...`` line with exit code 2; ``--debug`` or ``BFPO_DEBUG=1`` shows its traceback. Any other
exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import List, Optional

from bfpo.errors import USER_ERROR_EXIT, user_message

#: command -> (module, one-line help). Commands whose module is absent from this install are not listed.
COMMANDS = {
    "demo": ("bfpo.experiments.demo", "align SmolLM2-135M-Instruct on this machine and report before/after"),
    "illustrate": ("bfpo.experiments.toy", "the illustrative experiment of section 3.4 (Figure 4)"),
    "sft": ("bfpo.train.sft", "supervised fine-tuning stage (section 4.2) from a YAML config"),
    "train": ("bfpo.train.run", "BFPO / DPO / IPO preference training, or MORL (--method morl), from a YAML config"),
    "morl": ("bfpo.train.morl", "MORL, the RL baseline (TRL's RLOO); an alias of `bfpo train --method morl`"),
    "world": (
        "bfpo.experiments.world",
        "sequence-level 'safety world' where the truth is known (Table 1 in miniature)",
    ),
    "redteam": ("bfpo.redteam.pipeline", "red-teaming data generation (section 4.3)"),
    "evaluate": ("bfpo.eval.evaluate", "harmlessness / helpfulness benchmark (section 4.1)"),
    "judge": ("bfpo.eval.judge_cli", "score saved generations with a judge; measure judges against hand labels"),
    "report": ("bfpo.eval.report", "tables and plots from evaluation results"),
    "recipes": ("bfpo.train.recipes", "list the shipped recipes, or copy one out to edit (ls / cp NAME DEST)"),
    "chat": ("bfpo.models.chat", "a small interactive prompt for a model directory"),
}


def _available(module: str) -> bool:
    """Whether ``module`` (a ``bfpo.*`` dotted name) is in this install, found on disk without importing
    any of its parent packages (``bfpo.train/__init__`` imports transformers)."""
    spec = importlib.util.find_spec("bfpo")
    if spec is None or not spec.submodule_search_locations:
        return False
    rel = Path(*module.split(".")[1:])
    return any(
        (Path(root) / rel).with_suffix(".py").is_file() or (Path(root) / rel / "__init__.py").is_file()
        for root in spec.submodule_search_locations
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the list of commands (``bfpo --help``). It imports no command module; each
    command parses its own settings (``bfpo COMMAND --help``)."""
    parser = argparse.ArgumentParser(prog="bfpo", description="Bi-Factorial Preference Optimization")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of user errors too (same as BFPO_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if not _available(module):
            continue
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run one sub-command; returns 0, or 2 after printing a user error as one line on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in COMMANDS and _available(COMMANDS[command][0]):
        at = argv.index(command)
        debug = "--debug" in argv[:at] or os.environ.get("BFPO_DEBUG", "") not in ("", "0")
        rest = argv[at + 1 :]
        try:
            importlib.import_module(COMMANDS[command][0]).main(rest)
        except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs re-raise
            message = user_message(exc)
            if message is None or debug:
                raise
            print(f"bfpo {command}: error: {message}", file=sys.stderr)
            return USER_ERROR_EXIT
        return 0
    build_parser().parse_args(argv)  # --help, no command, or an unknown one: argparse says so
    return 0


if __name__ == "__main__":
    sys.exit(main())
