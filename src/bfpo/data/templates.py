"""Chat templates: one template per run, shared by SFT, BFPO, red teaming and evaluation.

A recipe's ``model.chat_template`` (or ``--chat_template`` on the generation commands) is either the
name of a built-in template (:data:`BUILTIN`) or a Jinja template string. It replaces whatever the
tokenizer ships. A model whose tokenizer has no template and gets none is refused before any weights
load: without one, TRL's SFT stage cannot format conversations and our pair tokenisation would fall
back to a plain-text prompt that differs from the SFT stage's, so the two stages would disagree.

The paper (section 4.2) and its official code train Mistral-7B-v0.1 with the Zephyr template.
"""

from __future__ import annotations

from typing import Any, Optional

from bfpo.errors import UserInputError

#: Zephyr's template (HuggingFaceH4/zephyr-7b-beta): ``<|role|>\n{content}{eos}`` turns, and
#: ``<|assistant|>`` as the generation prompt. Used by the paper's recipes.
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)

#: ChatML (``<|im_start|>role\n...<|im_end|>``), as used by SmolLM2, Qwen and others.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

BUILTIN = {"zephyr": ZEPHYR, "chatml": CHATML}


class ChatTemplateError(UserInputError):
    """A model that cannot render conversations, or a template value that is neither a name nor Jinja."""


def resolve_chat_template(value: Optional[str], key: str = "model.chat_template") -> Optional[str]:
    """The Jinja text for ``value``: a built-in name (case-insensitive), a template string, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ChatTemplateError(
            f"{key} must be a built-in name ({', '.join(BUILTIN)}) or a Jinja template string, got {value!r}"
        )
    if value.strip().lower() in BUILTIN:
        return BUILTIN[value.strip().lower()]
    if "{%" not in value and "{{" not in value:
        raise ChatTemplateError(
            f"{key}={value!r} is neither a built-in template ({', '.join(BUILTIN)}) nor a Jinja template string"
        )
    return value


def apply_chat_template_setting(
    tokenizer: Any, value: Optional[str], model_name: str, key: str = "model.chat_template"
) -> Any:
    """Set ``tokenizer.chat_template`` from ``value`` (when given) and require that it has one.

    Raises :class:`ChatTemplateError` naming ``key`` when the tokenizer has no template and ``value`` is
    ``None`` (for example Mistral-7B-v0.1); returns the tokenizer.
    """
    template = resolve_chat_template(value, key)
    if template is not None:
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the tokenizer of {model_name} has no chat template; set {key} to a built-in name "
            f"({', '.join(BUILTIN)}) or a Jinja template string (the paper's recipes use zephyr)"
        )
    return tokenizer


#: The help of the ``chat_template`` setting of the commands that generate (``evaluate``, ``redteam``, ``chat``).
CHAT_TEMPLATE_HELP = (
    f"built-in template name ({', '.join(BUILTIN)}) or a Jinja string; needed when the model's "
    "tokenizer has none (use the template the model was trained with)"
)
