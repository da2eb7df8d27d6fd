"""User-facing errors.

Every error a user can cause (bad config, missing data, unknown device) is one of
these: clients print ``str(error)`` (one line per problem) and exit with
``exit_code``. Anything else escaping the engine is a bug.
"""

from __future__ import annotations


class LottoError(Exception):
    """Base class for errors caused by the user's input or environment."""

    exit_code: int = 2


class ConfigError(LottoError):
    """The experiment configuration is invalid; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"config error: {p}" for p in self.problems))


class DataError(LottoError):
    """A dataset could not be found, downloaded or read."""


class DeviceError(LottoError):
    """The requested device does not exist on this machine."""


class StoreError(LottoError):
    """The results store is missing, unreadable or lacks what was asked for."""
