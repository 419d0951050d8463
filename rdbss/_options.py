"""Mount options (``-o name[=value],...``): one parser for the command line, the core and
every backend, so that a value means the same, and a bad one is refused in the same
words, wherever it is read.

Each ``parse_*`` takes the text and ``what``: how the user wrote the setting
(``-o timeout=abc``, or ``ConnectTimeout abc in ~/.ssh/config``), which starts the
one-line message of the :class:`OptionError` it raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "OptionError",
    "option_what",
    "parse_flag",
    "parse_option_groups",
    "parse_port",
    "parse_seconds",
    "parse_size",
]

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class OptionError(ValueError):
    """A bad option value; ``str()`` is one line for the user."""


def option_what(name: str, value: str | None) -> str:
    """``-o name=value`` (or ``-o name``), as the user wrote it; a value that would not
    print on one line is quoted, so that the message stays one line."""
    if value is None:
        return f"-o {name}"
    return f"-o {name}={value if value.isprintable() else repr(value)}"


def parse_option_groups(groups: Iterable[str]) -> dict[str, str]:
    """``["a=1,b", "c=2"]`` -> ``{"a": "1", "b": "", "c": "2"}``: what ``-o`` was given,
    in order; a name given twice keeps its last value, as mount(8) does."""
    options: dict[str, str] = {}
    for group in groups:
        for item in filter(None, group.split(",")):
            name, _, value = item.partition("=")
            options[name.strip()] = value
    return options


def parse_seconds(text: str, what: str, *, allow_zero: bool = True) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 or (allow_zero and seconds == 0)) or math.isinf(seconds):
        bound = "0 or more" if allow_zero else "more than 0"
        raise OptionError(f"{what}: expected a number of seconds, {bound}")
    return seconds


def parse_size(text: str, what: str, *, minimum: int = 0) -> int:
    """Bytes, with an optional K, M, G or T suffix (powers of 1024) and a trailing B."""
    upper = text.strip().upper().removesuffix("B")
    number, suffix = (upper[:-1], upper[-1]) if upper[-1:] in ("K", "M", "G", "T") else (upper, "")
    if not (number.isascii() and number.isdigit()):
        raise OptionError(f"{what}: expected a size in bytes (K, M, G suffixes: e.g. 64M)")
    size = int(number) * _SIZE_SUFFIXES[suffix]
    if size < minimum:
        raise OptionError(f"{what}: expected a size of at least {_human(minimum)}")
    return size


def parse_flag(text: str | None, what: str) -> bool:
    """``-o name`` or ``-o name=yes|true|1`` is on; ``no|false|0`` is off; not given
    (None) is off."""
    if text is None:
        return False
    flag = text.lower()
    if flag in ("", "yes", "true", "1"):
        return True
    if flag in ("no", "false", "0"):
        return False
    raise OptionError(f"{what}: expected no value, yes or no")


def parse_port(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise OptionError(f"{what}: expected a port number from 1 to 65535")
    return int(text)


def _human(size: int) -> str:
    for suffix in ("T", "G", "M", "K"):
        unit = _SIZE_SUFFIXES[suffix]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size} bytes"
