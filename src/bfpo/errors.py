"""Errors a user can fix, as opposed to bugs.

The rule: anything caused by what the user gave us (a recipe key, a data file, a path, a command-line
value, an output folder that would be clobbered, settings that make training diverge) raises a subclass
of :class:`BfpoUserError` whose message names the file, row, field or key, what was expected and what was
found. ``bfpo`` prints such an error as one ``error: ...`` line and exits with code 2; every other
exception is a bug and keeps its traceback. ``bfpo --debug`` (or ``BFPO_DEBUG=1``) shows the traceback of
user errors too.

Each class also derives from the built-in exception a caller would catch without knowing bfpo
(``ValueError``, ``FileNotFoundError``, ``FileExistsError``, ``RuntimeError``), so library code that
catches those keeps working.

No imports beyond the standard library: every module, including the light ones that ``bfpo --help``
touches, may raise these.
"""

from __future__ import annotations

import errno

#: exit code of a user error (the same as argparse's usage errors)
USER_ERROR_EXIT = 2


class BfpoUserError(Exception):
    """Base of every error the user can fix by changing an input; printed as one line, exit code 2."""


class UserInputError(BfpoUserError, ValueError):
    """A value, key, row or field that is wrong (type, range, format)."""


class DataValidationError(UserInputError):
    """Bad input data; the message names the file, row and field (a ``ValueError``)."""


class UserPathNotFoundError(BfpoUserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputExistsError(BfpoUserError, FileExistsError):
    """An output path holds something bfpo did not write (or a finished model); it is never overwritten."""


class TrainingDivergedError(BfpoUserError, RuntimeError):
    """Training reached a non-finite loss or gradient norm; usually a learning rate too high or tau too small."""


#: OSErrors that are about a path the user named, printed as user errors when they carry a file name.
_PATH_ERRNOS = {
    errno.ENOENT: "not found",
    errno.EEXIST: "already exists",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a directory, expected a file",
    errno.ENOTDIR: "not a directory",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
}


def user_message(exc: BaseException) -> "str | None":
    """The one-line message of a user error, or None when ``exc`` is a bug (keep its traceback).

    User errors are :class:`BfpoUserError` instances and OSErrors about a named path (missing, existing,
    forbidden, a folder where a file was expected, disk full).
    """
    if isinstance(exc, BfpoUserError):
        return str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS and exc.filename:
        return f"{exc.filename}: {_PATH_ERRNOS[exc.errno]}"
    return None
