"""Settings of the experiment commands, on top of :func:`bfpo.args.parse`: :func:`setting` (a field with its
help text) and ``--quick``.

``bfpo demo --quick`` and ``bfpo world --quick`` are presets: other defaults for the same settings (a tiny
model, a few prompts, a handful of steps). A setting given in ``--config`` or on the command line still wins
over the preset, and ``bfpo demo --quick --help`` shows the preset's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from bfpo.args import coerce_field, parse, read_config_file


def setting(help: str, **kwargs) -> Any:  # noqa: A002 - mirrors bfpo.args.choices
    """A dataclass field with its ``--help`` text (``default`` or ``default_factory`` in ``kwargs``)."""
    return dataclasses.field(metadata={"help": help}, **kwargs)


def with_defaults(cls: type, defaults: Dict[str, Any]) -> type:
    """A subclass of the dataclass ``cls`` whose fields named in ``defaults`` default to those values
    (help texts and choices kept)."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - set(known))
    if unknown:
        raise KeyError(f"{cls.__name__} has no field(s) {unknown}")
    new_fields = []
    for name, value in defaults.items():
        f = known[name]
        factory = (lambda v=value: list(v)) if isinstance(value, list) else None
        spec = dataclasses.field(
            metadata=f.metadata, **({"default_factory": factory} if factory else {"default": value})
        )
        new_fields.append((name, hints[name], spec))
    return dataclasses.make_dataclass(cls.__name__, new_fields, bases=(cls,))


def quick_requested(argv: Sequence[str]) -> bool:
    """Whether ``--quick`` is on: given on the command line (``--quick``, ``--quick true``), or ``quick: true``
    in the ``--config`` file."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--quick", nargs="?", const=True, default=None)
    probe.add_argument("--config", default=None)
    known, _ = probe.parse_known_args(list(argv))
    value = known.quick
    if value is None and known.config:
        try:
            value = read_config_file(Path(known.config)).get("quick")
        except Exception:  # noqa: BLE001 - parse() reports a bad config file with its own message
            value = None
    try:
        return bool(coerce_field("quick", value, Optional[bool]))
    except ValueError:
        return False  # parse() names the bad value


def parse_with_quick(
    dtypes: Sequence[type],
    quick: Dict[type, Dict[str, Any]],
    argv: Optional[Sequence[str]],
    *,
    prog: str,
    description: str,
) -> Tuple[Any, ...]:
    """:func:`bfpo.args.parse` of ``dtypes``; with ``--quick``, the dataclasses in ``quick`` default to its
    values. Returns instances of the original classes."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    use_quick = quick_requested(argv)
    types = [with_defaults(t, quick[t]) if use_quick and t in quick else t for t in dtypes]
    parsed = parse(types, argv, prog=prog, description=description)
    out = []
    for base, inst in zip(dtypes, parsed):
        if type(inst) is not base:
            inst = base(**{f.name: getattr(inst, f.name) for f in dataclasses.fields(base) if f.init})
        out.append(inst)
    return tuple(out)
