"""``bfpo chat``: a small interactive prompt for a model directory (read a line, print the reply).

The conversation is kept (multi-turn, rendered with the model's chat template); ``/reset`` clears it,
``exit``/``quit`` or end of input stops. Greedy decoding unless ``--temperature`` > 0.

"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, TextIO

from bfpo.data.templates import CHAT_TEMPLATE_HELP

EXIT_WORDS = ("exit", "quit", "/exit", "/quit")


def chat_loop(
    model,
    tokenizer,
    stdin: Optional[TextIO] = None,
    stdout: Optional[TextIO] = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    system_prompt: Optional[str] = None,
    keep_history: bool = True,
) -> List[Dict[str, str]]:
    """Answer lines from ``stdin`` (default: sys.stdin) until exit/EOF; returns the conversation."""
    from bfpo.models.generate import generate

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    history: List[Dict[str, str]] = []
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            stdout.write("\n")
            break
        text = line.strip()
        if text.lower() in EXIT_WORDS:
            break
        if not text:
            continue
        if text == "/reset":
            history = []
            stdout.write("(conversation cleared)\n")
            continue
        turn = (history if keep_history else []) + [{"role": "user", "content": text}]
        reply = generate(
            model,
            tokenizer,
            [turn],
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            system_prompt=system_prompt,
            progress=False,
        )[0][0]
        history = turn + [{"role": "assistant", "content": reply}]
        stdout.write(f"bot> {reply}\n")
        stdout.flush()
    return history


@dataclass
class ChatArguments:
    """Settings of ``bfpo chat``."""

    model_name_or_path: str = field(metadata={"help": "model folder or hub name to talk to (required)"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens generated per reply"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 = greedy"})
    system_prompt: Optional[str] = field(default=None, metadata={"help": "a system message before the conversation"})
    chat_template: Optional[str] = field(default=None, metadata={"help": CHAT_TEMPLATE_HELP})
    no_history: bool = field(default=False, metadata={"help": "answer each line on its own (no conversation)"})


def main(argv: Optional[Sequence[str]] = None) -> None:
    from bfpo.args import parse
    from bfpo.models.generate import load_for_generation

    (a,) = parse([ChatArguments], argv, prog="bfpo chat", description=__doc__.split("\n\n")[0])
    model, tok = load_for_generation(a.model_name_or_path, chat_template=a.chat_template)
    print(f"chatting with {a.model_name_or_path}; 'exit' or Ctrl-D quits, /reset clears the conversation")
    chat_loop(
        model,
        tok,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        system_prompt=a.system_prompt,
        keep_history=not a.no_history,
    )
