"""The ``bfpo`` command: one thin entry point that parses arguments and calls a pipeline.

Each sub-command lives in its own module, which defines ``add_arguments(parser)`` and ``main(args)``.
Modules are imported only when their command runs, so ``bfpo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import List, Optional

#: command -> (module, one-line help). Commands whose module is absent from this install are not listed.
COMMANDS = {
    "demo": ("bfpo.demo", "align SmolLM2-135M-Instruct on this machine and report before/after"),
    "illustrate": ("bfpo.toy", "the illustrative experiment of section 3.4 (Figure 4)"),
    "sft": ("bfpo.train.sft", "supervised fine-tuning stage (section 4.2) from a YAML config"),
    "train": ("bfpo.train.run", "BFPO / DPO / IPO preference training from a YAML config"),
    "world": ("bfpo.world", "sequence-level 'safety world' where the truth is known (Table 1 in miniature)"),
    "redteam": ("bfpo.redteam", "red-teaming data generation (section 4.3)"),
    "evaluate": ("bfpo.evaluate", "harmlessness / helpfulness benchmark (section 4.1)"),
    "report": ("bfpo.report", "tables and plots from evaluation results"),
    "chat": ("bfpo.chat", "a small interactive prompt for a model directory"),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (to add its arguments), so one command's
    import cost or failure never touches another."""
    parser = argparse.ArgumentParser(prog="bfpo", description="Bi-Factorial Preference Optimization")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if not _available(module):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    importlib.import_module(args._module).main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
