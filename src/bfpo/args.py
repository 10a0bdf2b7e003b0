"""One way to configure every command: dataclasses, a YAML file, the command line.

Every ``bfpo`` command (and every benchmark script) describes its settings as dataclasses whose fields carry
``metadata={"help": ...}``, and reads them with :func:`parse`, the way TRL's scripts do:

    bfpo train --config recipe.yaml --tau 0.1 --output_dir runs/x

* ``--config FILE.yaml`` is a flat mapping of field names to values; it replaces the defaults;
* ``--field value`` on the command line wins over the file (``--field-name`` works too);
* ``--help`` lists every field with its type, default and help text (``HfArgumentParser``); a field that
  two dataclasses declare is one flag, given to both;
* a key or flag that no dataclass has is an error naming it, with the closest names; values are converted
  to the field's type and range-checked (:data:`RANGES`) before anything is loaded, and the error names the
  file and key, or the flag.

Fields of the same meaning have the same name in every command: ``output_dir`` is always a folder, ``seed``
one integer and ``seeds`` a list, ``judge`` and ``ranker`` list their choices.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import math
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from bfpo.errors import UserInputError, UserPathNotFoundError


class ConfigError(UserInputError):
    """A setting that cannot be used; the message names the file and key, or the flag (a ``ValueError``)."""


# ------------------------------------------------------------------------------ value validation
#: Ranges of fields, whatever dataclass holds them (types come from the dataclasses themselves).
#: name -> (test of a non-None value, what is expected).
RANGES: Dict[str, tuple] = {
    "learning_rate": (lambda v: v >= 0, ">= 0"),
    "num_train_epochs": (lambda v: v > 0, "> 0"),
    "max_steps": (lambda v: v == -1 or v > 0, "> 0, or -1 to train for num_train_epochs"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "per_device_train_batch_size": (lambda v: v >= 1, ">= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "logging_steps": (lambda v: v > 0, "> 0"),
    "save_steps": (lambda v: v > 0, "> 0"),
    "eval_steps": (lambda v: v > 0, "> 0"),
    "save_total_limit": (lambda v: v >= 1, ">= 1"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v >= 0, ">= 0"),
    "dataloader_num_workers": (lambda v: v >= 0, ">= 0"),
    # the loss squares g_I / tau in float32: below 1e-18 it overflows to inf at the first step
    "tau": (lambda v: v >= 1e-18, ">= 1e-18 (the loss squares g_I/tau in float32)"),
    "max_length": (lambda v: v >= 1, ">= 1"),
    "max_prompt_length": (lambda v: v >= 1, ">= 1"),
    "max_new_tokens": (lambda v: v >= 1, ">= 1"),
    "logps_chunk_size": (lambda v: v >= 1, ">= 1"),
    "safedpo_delta": (lambda v: v >= 0, ">= 0"),
    "temperature": (lambda v: v >= 0, ">= 0"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "limit": (lambda v: v >= 0, ">= 0"),
    "safety_limit": (lambda v: v >= 0, ">= 0"),
    "helpful_limit": (lambda v: v >= 0, ">= 0"),
    "lora_r": (lambda v: v >= 1, ">= 1"),
    "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
_TRUE_WORDS, _FALSE_WORDS = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_SKIP = object()  # a type this check does not judge (Any, dicts, config objects): left to the dataclass


def _union_members(hint: Any) -> tuple:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _as_member(value: Any, member: Any) -> Any:
    """``value`` as an instance of one union ``member`` (str -> number, int -> float, str -> [str]),
    ``_SKIP`` for types not judged here, or raise ValueError when it cannot be one."""
    origin = typing.get_origin(member)
    if member is type(None):
        if value is None:
            return None
        raise ValueError
    if member is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise ValueError
    if member in (int, float):
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip()) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or math.isnan(number):
            raise ValueError
        if member is float:
            return float(number)
        if math.isfinite(number) and float(number).is_integer():
            return int(number)
        raise ValueError
    if member is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if isinstance(member, type) and issubclass(member, enum.Enum):
        if value in [e.value for e in member] or isinstance(value, member):
            return value
        raise ValueError
    if origin is list:
        (item,) = typing.get_args(member) or (Any,)
        items = [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError
        if item in (int, float, str, bool):
            return [_as_member(x, item) for x in items]
        return list(items)
    return _SKIP


def _describe(members: tuple) -> str:
    names = []
    for m in members:
        if m is type(None):
            names.append("null")
        elif isinstance(m, type) and issubclass(m, enum.Enum):
            names.append("one of " + ", ".join(str(e.value) for e in m))
        elif typing.get_origin(m) is list:
            names.append("a list of " + getattr((typing.get_args(m) or (Any,))[0], "__name__", "values"))
        else:
            names.append(
                {bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(
                    m, getattr(m, "__name__", str(m))
                )
            )
    return " or ".join(dict.fromkeys(names))


def coerce_field(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the dataclass field type ``hint`` (YAML's ``1e-5`` string -> float, a single
    string -> a one-element list); ValueError saying what was expected when it cannot be."""
    members = _union_members(hint)
    enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
    if enums and value is not None:  # ``SaveStrategy | str``: the text must still name a member
        allowed = [str(e.value) for m in enums for e in m]
        if value is False and "no" in allowed:  # YAML 1.1 reads an unquoted `no` as false
            return "no"
        if isinstance(value, (str, enum.Enum)) and str(getattr(value, "value", value)) in allowed:
            return value
        raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
    # an exact instance first, so that "1" for ``str | int`` stays text and 1 for ``float | int`` stays int
    for member in members:
        if isinstance(member, type) and not issubclass(member, enum.Enum) and type(value) is member:
            return value
    if value is None and type(None) in members:
        return None
    if type(None) in members and str not in members and value in ("null", "None", ["null"]):
        return None  # the command line's way to say null (``--trainable null``, ``--alpha null``)
    judged = False
    for member in members:
        try:
            out = _as_member(value, member)
        except (TypeError, ValueError):
            judged = True
            continue
        if out is _SKIP:
            return value
        return out
    if not judged:
        return value
    raise ValueError(f"expected {_describe(members)}, got {value!r}")


def check_value(name: str, value: Any, choices: Optional[Sequence] = None) -> None:
    """Range (:data:`RANGES`), regex (``trainable``) and choice checks of one converted value; ValueError."""
    if name in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
        test, expected = RANGES[name]
        if not test(value):
            raise ValueError(f"must be {expected}, got {value!r}")
    if name == "trainable":
        for pattern in value or ():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({e})") from None
    if choices is not None and value is not None:
        for item in value if isinstance(value, list) else [value]:
            if item not in choices:
                raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {item!r}")


def choices(*values: str, help: str = "", **kwargs) -> Any:  # noqa: A002 - mirrors dataclasses.field
    """A dataclass field whose value must be one of ``values`` (``--help`` lists them; checked by
    :func:`parse`, for the file and the command line alike)."""
    return dataclasses.field(metadata={"help": help, "choices": tuple(values)}, **kwargs)


# --------------------------------------------------------------------------------- config files
def read_config_file(path: Path) -> Dict[str, Any]:
    """A flat YAML mapping of field names to values; errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserPathNotFoundError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; expected a .yaml file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of setting names to values, got {type(data).__name__}")
    return data


def _unknown(names: Iterable[str], allowed: Iterable[str], where: str, dash: bool) -> ConfigError:
    allowed = sorted(allowed)
    hints = []
    for key in names:
        close = difflib.get_close_matches(key, allowed, n=3)
        shown = [("--" + c) if dash else c for c in close]
        hints.append((f"--{key}" if dash else repr(key)) + (f" (did you mean {', '.join(shown)}?)" if close else ""))
    return ConfigError(f"{where}: unknown setting(s) {'; '.join(hints)}; --help lists them all")


def _fields(dtypes: Sequence[type]) -> Dict[str, Tuple[dataclasses.Field, Any]]:
    out: Dict[str, Tuple[dataclasses.Field, Any]] = {}
    for dtype in dtypes:
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if f.init:
                out[f.name] = (f, hints[f.name])
    return out


def _checked(name: str, value: Any, spec: Tuple[dataclasses.Field, Any]) -> Any:
    f, hint = spec
    value = coerce_field(name, value, hint)
    check_value(name, value, f.metadata.get("choices"))
    return value


def parse(
    dtypes: Sequence[type],
    argv: Optional[Sequence[str]] = None,
    *,
    prog: str,
    description: Optional[str] = None,
    epilog: Optional[str] = None,
    resolve_config: Optional[Callable[[str], Path]] = None,
    path_fields: Sequence[str] = (),
) -> Tuple[Any, ...]:
    """Read ``dtypes`` (dataclasses) from ``--config FILE`` and the command line ``argv``.

    ``resolve_config`` turns the ``--config`` value into a file (e.g. a shipped recipe's name); relative
    paths in ``path_fields`` that do not exist in the working directory are looked up beside the file.
    Returns one instance per dataclass, in order. Errors (unknown keys, bad values, a dataclass's own
    ``__post_init__`` check) are :class:`ConfigError` naming the file and key or the flag.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    # a field that several dataclasses declare (``trust_remote_code`` of ModelArguments and SFTConfig) is one
    # flag whose value each of them receives: the later declaration replaces the earlier one's option
    parser = HfArgumentParser(
        list(dtypes),
        prog=prog,
        description=description,
        epilog=epilog,
        conflict_handler="resolve",
        allow_abbrev=False,  # --learning_rat is a typo
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="a YAML file of settings (flat: name: value); flags on the command line win",
    )
    specs = _fields(dtypes)
    _text_values(parser, specs)

    def error(message: str):  # argparse's own errors (a missing required flag, a bad choice) as ConfigError
        raise ConfigError(message)

    parser.error = error  # type: ignore[method-assign]
    config_path = _config_arg(argv)
    from_file: Dict[str, Any] = {}
    if config_path is not None:
        path = resolve_config(config_path) if resolve_config else Path(config_path)
        raw = read_config_file(path)
        nested = [k for k, v in raw.items() if isinstance(v, dict) and k not in specs]
        if nested:
            raise ConfigError(
                f"{path}: section(s) {', '.join(nested)} are not settings: a config file is flat "
                "(name: value), e.g. 'tau: 0.1', not 'train: {tau: 0.1}'; move the keys to the top "
                "level under their flat names (model: {name_or_path} -> model_name_or_path, "
                f"data: {{safety: {{source}}}} -> safety_source; `{prog} --help` lists them)"
            )
        unknown = [k for k in raw if k not in specs]
        if unknown:
            raise _unknown(unknown, specs, str(path), dash=False)
        for key, value in raw.items():
            try:
                value = _checked(key, value, specs[key])
            except ValueError as e:
                raise ConfigError(f"{path}: {key}: {e}") from None
            if (
                key in path_fields
                and isinstance(value, str)
                and not Path(value).is_absolute()
                and not Path(value).exists()
                and (path.parent / value).exists()
            ):
                value = str(path.parent / value)
            from_file[key] = value
        for action in parser._actions:
            if action.dest in from_file:  # absent from the namespace unless given on the command line
                action.default = argparse.SUPPRESS
                action.required = False
    namespace, extra = parser.parse_known_args(argv)
    if extra:
        flags = [a[2:].split("=", 1)[0].replace("-", "_") for a in extra if a.startswith("--")]
        raise _unknown(flags or extra, specs, "command line", dash=True)
    given = vars(namespace)
    for name, spec in specs.items():
        if name in given and given[name] is not None:
            try:
                given[name] = _checked(name, given[name], spec)
            except ValueError as e:
                raise ConfigError(f"--{name}: {e}") from None
    given.update({key: value for key, value in from_file.items() if key not in given})  # flags win
    out = []
    for dtype in dtypes:
        keys = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            out.append(dtype(**{k: v for k, v in given.items() if k in keys}))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{config_path}: {e}" if config_path else str(e)) from None
    return tuple(out)


def peek_choice(
    argv: Optional[Sequence[str]],
    name: str,
    allowed: Sequence[str],
    default: str,
    *,
    resolve_config: Optional[Callable[[str], Path]] = None,
) -> str:
    """The value of setting ``name`` before the others are parsed, for a setting that chooses which dataclasses
    read them (``bfpo train --method``): the last ``--name`` flag, else the ``--config`` file's key, else
    ``default``. A value not in ``allowed`` is a :class:`ConfigError` naming the flag, or the file and key."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flag = f"--{name}"
    value: Any = None
    where = flag
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    config_path = _config_arg(argv)
    if value is None and config_path is not None:
        path = resolve_config(config_path) if resolve_config else Path(config_path)
        raw = read_config_file(path)
        if name in raw:
            value, where = raw[name], f"{path}: {name}"
    if value is None:
        return default
    try:
        check_value(name, value, allowed)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return value


def _text_values(parser: argparse.ArgumentParser, specs: Dict[str, Any]) -> None:
    """Let numbers and true/false arrive as text: :func:`coerce_field` converts them with messages that say
    what was expected (argparse's own conversion would end the program with its usage text)."""
    from transformers.hf_argparser import string_to_bool

    for action in parser._actions:
        if action.dest in specs and action.type in (int, float, bool, string_to_bool):  # bool: List[bool] items
            action.type = None


def _config_arg(argv: List[str]) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def to_dict(*instances: Any) -> Dict[str, Any]:
    """The settings of dataclass ``instances`` as one flat mapping (what a ``--config`` file holds), for
    writing beside a run's results."""
    out: Dict[str, Any] = {}
    for inst in instances:
        for f in dataclasses.fields(inst):
            if f.init and not f.name.startswith("_"):
                value = getattr(inst, f.name)
                out[f.name] = value.value if isinstance(value, enum.Enum) else value
    return out
