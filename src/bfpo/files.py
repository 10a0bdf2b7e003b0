"""Reading and writing files: one place for UTF-8 text and JSON-lines, with errors that name the file and
the line (a :class:`bfpo.errors.DataValidationError`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

from bfpo.errors import DataValidationError, UserInputError, UserPathNotFoundError


def decode_utf8(path: Path | str, data: bytes) -> str:
    """``data`` (the bytes of ``path``) as text; :class:`DataValidationError` naming the file, line and
    column of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataValidationError(f"{path} line {line}: byte 0x{data[e.start]:02x} at column {column} is not "
                                  "UTF-8; save the file as UTF-8") from None


def read_text_utf8(path: Path | str) -> str:
    """The text of ``path``, decoded as UTF-8 with errors that name the line (see :func:`decode_utf8`)."""
    return decode_utf8(path, Path(path).read_bytes())


def iter_jsonl(path: str) -> Iterable[Tuple[int, Dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a jsonl file; errors name file and line."""
    for n, line in enumerate(read_text_checked(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"{path} line {n}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataValidationError(f"{path} line {n}: expected a JSON object")
        yield n, row


def read_text_checked(path: str | Path) -> str:
    """The UTF-8 text of a data file; one-line errors for a folder, a missing file or a byte that is not
    UTF-8."""
    if Path(path).is_dir():
        raise UserInputError(f"{path} is a folder; expected a file")
    if not Path(path).exists():
        raise UserPathNotFoundError(f"{path} not found")
    return read_text_utf8(path)


