"""User-facing errors, and the one-line form of any error.

Every error a user can cause (bad config, missing data, unknown device) is one of
these: clients print ``str(error)`` (one line per problem) and exit with
``exit_code``. Anything else escaping the engine is a bug, shown as one line by
:func:`one_line`.
"""

from __future__ import annotations

import re
import unicodedata

#: Line and paragraph separators break a line like ``\n`` does; treat them as controls.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
#: Bidirectional formatting characters (embeddings, overrides, isolates, marks) reorder
#: the text around them on screen: ``\u202e`` shows ``evil.exe`` as ``exe.live``.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
#: Where a PyTorch (c10) message turns into a C++ backtrace.
_BACKTRACE_START = re.compile(r"^\s*(Exception raised from |frame #\d+)")
_ENFORCE_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\]\s*")


def is_control(ch: str) -> bool:
    """Whether ``ch`` could break a line, drive a terminal or reorder what is shown
    (C0/C1 controls, DEL, Unicode line and paragraph separators, bidi formatting)."""
    return ch in _BIDI_CONTROLS or unicodedata.category(ch) in _CONTROL_CATEGORIES


def first_control(text: str) -> str | None:
    """The first control character of ``text``, escaped (``\\x1b``), or None."""
    for ch in text:
        if is_control(ch):
            return _escape_char(ch)
    return None


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x1b``,
    ``\\u2028``), so printing it can neither break a line nor drive the terminal."""
    return "".join(_escape_char(ch) if is_control(ch) else ch for ch in text)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message as one short, printable line (no type name).

    Keeps the first meaningful line (and the next one when the first ends in ``:``),
    drops PyTorch's C++ backtrace (``Exception raised from ...``, ``frame #N``),
    collapses whitespace, escapes control characters and cuts at ``limit`` characters
    with an ellipsis; an empty message gives the exception's type name.
    """
    lines: list[str] = []
    for line in str(err).splitlines():
        if _BACKTRACE_START.match(line):
            break
        line = " ".join(line.split())
        if line:
            lines.append(line)
    kept = lines[:2] if lines and lines[0].endswith(":") else lines[:1]
    text = _ENFORCE_PREFIX.sub("", escape_controls(" ".join(kept))) or type(err).__name__
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


class LottoError(Exception):
    """Base class for errors caused by the user's input or environment."""

    exit_code: int = 2


class ConfigError(LottoError):
    """The experiment configuration is invalid; one line per problem (control
    characters in a problem, say from a key in a crafted file, are escaped)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [escape_controls(p) for p in problems]
        super().__init__("\n".join(f"config error: {p}" for p in self.problems))


class DataError(LottoError):
    """A dataset could not be found, downloaded or read."""


class DeviceError(LottoError):
    """The requested device does not exist on this machine."""


class StoreError(LottoError):
    """The results store is missing, unreadable or lacks what was asked for."""
