"""Argument types shared by the command-line tools (``python -m fused_optim ...``): a bad value is argparse's
usage error naming the option, never a traceback from deep inside a run."""

from __future__ import annotations

import argparse
import errno
import math
import os
from collections.abc import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer option of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)


def positive_float(text: str) -> float:
    """A positive, finite number (an lr, a norm)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def check_output_file(path: str | os.PathLike[str]) -> None:
    """Refuse, before a run, a file its end could not write: the folder is missing or not writable, or the path
    is a folder. Raises OSError with the reason."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "no such folder", folder)
    if not os.access(folder, os.W_OK):
        raise PermissionError(errno.EACCES, "folder not writable", folder)


def output_file(text: str) -> str:
    """A file written at the end of the run (a PNG): checked now, so a typo fails before the run, not after it.
    '' means none."""
    if text:
        try:
            check_output_file(text)
        except OSError as e:
            raise argparse.ArgumentTypeError(f"cannot write {text}: {e.strerror}: {e.filename}") from None
    return text
