"""``bfpo chat``: a small interactive prompt for a model directory (read a line, print the reply).

The conversation is kept (multi-turn, rendered with the model's chat template); ``/reset`` clears it,
``exit``/``quit`` or end of input stops. Greedy decoding unless ``--temperature`` > 0.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Optional, TextIO

EXIT_WORDS = ("exit", "quit", "/exit", "/quit")


def chat_loop(model, tokenizer, stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None,
              max_new_tokens: int = 256, temperature: float = 0.0, system_prompt: Optional[str] = None,
              keep_history: bool = True) -> List[Dict[str, str]]:
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
        reply = generate(model, tokenizer, [turn], max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                         temperature=temperature if temperature > 0 else 1.0, system_prompt=system_prompt,
                         progress=False)[0][0]
        history = turn + [{"role": "assistant", "content": reply}]
        stdout.write(f"bot> {reply}\n")
        stdout.flush()
    return history


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model directory or hub name")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--no-history", action="store_true", help="answer each line on its own")


def main(args) -> None:
    from bfpo.models.generate import load_model

    model, tok = load_model(args.model)
    print(f"chatting with {args.model}; 'exit' or Ctrl-D quits, /reset clears the conversation")
    chat_loop(model, tok, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
              system_prompt=args.system_prompt, keep_history=not args.no_history)
