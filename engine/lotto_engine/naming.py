"""Readable default names for experiments: where a config came from and what differs.

An experiment run without ``run.name`` is stored as ``demo``, ``demo, lr=0.1, seeds=3``
or ``paper, sparsities=[0.5]``: the *base* (a preset's name, a TOML file's stem, or
``defaults``) and each setting that differs from the base's own config, in the order
of the config reference. Names stay under :data:`LIMIT` characters; the settings that
do not fit are counted (``+3 more``).

Only settings that change what an experiment computes are named (the ``run`` section,
``data.root`` and ``data.download`` are not, as in
:meth:`~lotto_engine.config.ExperimentConfig.identity`). Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .config import PRESETS, ExperimentConfig, load_config
from .errors import escape_controls

#: Longest default name (characters).
LIMIT = 60
#: The base of a config built from the defaults alone (no preset, no file).
DEFAULTS = "defaults"
#: Keys that never appear in a name: they change nothing an experiment computes.
_UNNAMED: dict[str, Any] = {"run": True, "data": {"root": True, "download": True}}
#: Settings shown under another word than their key's last part.
_SHOWN_AS = {"model.name": "model"}


def default_name(config: ExperimentConfig, base: str | None = None, *,
                 reference: ExperimentConfig | None = None, limit: int = LIMIT) -> str:
    """``base`` and the settings of ``config`` that differ from ``reference``.

    ``reference`` is the config ``base`` stands for; by default the preset named
    ``base``, else the defaults (``base`` None means ``defaults``). A client that
    starts from a TOML file passes the file's stem and the file's own config.
    """
    base = _clean(base or DEFAULTS, limit)
    if reference is None:
        reference = base_config(base)
    parts = list(differences(config, reference))
    name = base
    for i, part in enumerate(parts):
        left = len(parts) - i - 1
        more = len(f", +{left} more") if left else 0
        if len(name) + 2 + len(part) + more > limit:
            return f"{name}, +{len(parts) - i} more"
        name = f"{name}, {part}"
    return name


def base_config(base: str | None) -> ExperimentConfig:
    """The config a base name stands for: its preset, or the defaults."""
    return load_config(preset=base if base in PRESETS else None)


def differences(config: ExperimentConfig, reference: ExperimentConfig) -> Iterator[str]:
    """``key=value`` for each named setting where ``config`` differs from ``reference``."""
    mine, theirs = _settings(config), _settings(reference)
    for key, value in mine.items():
        if theirs.get(key) != value:
            yield f"{_SHOWN_AS.get(key, key.split('.')[-1])}={_value(key, value)}"


def name_origin(config: ExperimentConfig) -> tuple[str, ExperimentConfig | None]:
    """(base, reference) to name configs edited from the stored ``config``.

    A default name (``demo, lr=0.1``) gives its base back (``demo``, its preset); a
    name someone chose gives itself and this config (edits read ``my run, lr=0.2``);
    no name gives the preset (or the defaults) it differs least from.
    """
    name = config.run.name
    if name:
        head = name.split(", ", 1)[0]
        if default_name(config, head) == name:
            return head, None
        return name, config
    bases = [*PRESETS, DEFAULTS]
    return min(bases, key=lambda b: sum(1 for _ in differences(config, base_config(b)))), None


def name_to_store(config: ExperimentConfig, default: str, existing: str | None) -> str:
    """The ``run.name`` to run ``config`` under: its own name when it has one; else
    ``default`` when its experiment is new (``existing`` None) or unnamed (``""``);
    else ``""``, which keeps the name the experiment already has."""
    if config.run.name:
        return config.run.name
    return default if not existing else ""


def _settings(config: ExperimentConfig) -> dict[str, Any]:
    dumped = config.model_dump(mode="json", exclude=_UNNAMED)
    return {f"{section}.{key}": value for section, values in dumped.items() for key, value in values.items()}


def _value(key: str, value: Any) -> str:
    if key == "grid.seeds" and isinstance(value, list) and len(value) > 1 and value == list(range(len(value))):
        return str(len(value))  # seeds 0..n-1: how many
    if isinstance(value, list):
        return "[" + ",".join(_value("", v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return escape_controls(str(value))


def _clean(base: str, limit: int) -> str:
    """A base as one printable line, short enough to leave room for ``, +N more``."""
    base = escape_controls(" ".join(base.split()))
    room = max(1, limit - len(", +99 more"))
    return base if len(base) <= room else base[: room - 1] + "…"


__all__ = ["DEFAULTS", "LIMIT", "base_config", "default_name", "differences", "name_origin", "name_to_store"]
