"""The configuration panel: one widget per field of ``ExperimentConfig``, generated
from the pydantic model itself, so a new config key shows up here without UI work.

Every edit re-validates the whole form with the engine's own model and parser
(:func:`lotto_engine.config.parse_override` and :func:`~lotto_engine.config.validate`),
so a problem reads exactly as ``lotto-tui --set KEY=VALUE`` would print it, shown
under the field it names.

A line under the bar previews what ``r`` would do with the form's config (the app
fills it: which experiment, how many jobs are reused and how many train). The form
also knows where its config came from (a preset, a file, a stored experiment), which
names a new experiment that has no ``run.name`` (:mod:`lotto_engine.naming`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.events import DescendantFocus
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static
from textual.widgets.selection_list import Selection

from lotto_engine.activations import ACTIVATIONS
from lotto_engine.config import PRESETS, VARIANTS, ExperimentConfig, load_config, parse_override, render_toml, validate
from lotto_engine.errors import ConfigError
from lotto_engine.files import write_text_atomic
from lotto_engine.naming import DEFAULTS, default_name, name_origin
from lotto_engine.scores import METHODS

from .keys import CONFIG_KEYS, bindings

Kind = Literal["choice", "flag", "names", "list", "text"]
#: Keys edited as a set of names picked from a fixed list (in the list's order).
_REGISTRIES: dict[str, tuple[str, ...]] = {
    "grid.activations": tuple(ACTIVATIONS.names()),
    "grid.methods": tuple(METHODS.names()),
    "grid.variants": VARIANTS,
}


@dataclass(frozen=True)
class FieldSpec:
    """One config key and how the form edits it."""

    key: str  # dotted: "train.lr"
    kind: Kind
    annotation: Any
    description: str
    choices: tuple[str, ...] = ()

    @property
    def dom_id(self) -> str:
        return "field-" + self.key.replace(".", "-").replace("_", "-")

    @property
    def error_id(self) -> str:
        return "error-" + self.key.replace(".", "-").replace("_", "-")


def field_specs() -> list[FieldSpec]:
    """Every key of the config, in model order, with the widget kind that edits it."""
    specs = []
    for section, info in ExperimentConfig.model_fields.items():
        for name, field in info.annotation.model_fields.items():  # type: ignore[union-attr]
            key = f"{section}.{name}"
            ann = field.annotation
            if typing.get_origin(ann) is Literal:
                spec = FieldSpec(key, "choice", ann, field.description or "", tuple(typing.get_args(ann)))
            elif ann is bool:
                spec = FieldSpec(key, "flag", ann, field.description or "")
            elif key in _REGISTRIES:
                spec = FieldSpec(key, "names", ann, field.description or "", _REGISTRIES[key])
            elif typing.get_origin(ann) is list:
                spec = FieldSpec(key, "list", ann, field.description or "")
            else:
                spec = FieldSpec(key, "text", ann, field.description or "")
            specs.append(spec)
    return specs


def _get(config: ExperimentConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _flag(value: Any) -> str:
    """A checkbox's label says its state in words (no colour needed to read it)."""
    return "on" if value else "off"


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def default_toml(config: ExperimentConfig) -> Path:
    """Where the form saves a config no file was named for: ``<store>/lotto.toml``."""
    return Path(config.run.store).expanduser() / "lotto.toml"


class ConfigForm(Widget):
    """Edits an :class:`ExperimentConfig`; posts :class:`ConfigForm.Changed` on every edit."""

    BINDINGS = bindings(CONFIG_KEYS)
    TYPING_PAUSE = 0.25  # seconds without a key before a typed value is validated
    DEFAULT_CSS = """
    ConfigForm { height: 1fr; }
    ConfigForm #config-bar { height: 1; }
    ConfigForm #config-bar Label { padding: 0 1 0 0; }
    ConfigForm #preset { width: 18; }
    ConfigForm #toml-path { width: 1fr; }
    ConfigForm #config-bar Button { min-width: 8; height: 1; border: none; margin-left: 1; }
    ConfigForm #config-preview { height: auto; color: $text-muted; }
    ConfigForm #config-problems { color: $text-error; height: auto; display: none; }
    ConfigForm #config-problems.-shown { display: block; }
    ConfigForm .section { text-style: bold; color: $text-accent; margin-top: 1; }
    ConfigForm .field { height: auto; }
    ConfigForm .field > .key { width: 22; padding: 0 1 0 0; }
    ConfigForm .field > Input, ConfigForm .field > Select { width: 1fr; }
    ConfigForm .field > SelectionList { width: 1fr; height: auto; max-height: 8; }
    ConfigForm .field > Checkbox { border: none; height: 1; width: auto; padding: 0; background: transparent; }
    ConfigForm .error { color: $text-error; padding-left: 22; height: auto; display: none; }
    ConfigForm .error.-shown { display: block; }
    ConfigForm #field-hint { height: 1; color: $text-muted; dock: bottom; }
    """

    class Changed(Message):
        """The form was edited: ``config`` when it validates, else ``problems``."""

        def __init__(self, config: ExperimentConfig | None, problems: list[str]) -> None:
            super().__init__()
            self.config = config
            self.problems = problems

    def __init__(
        self, config: ExperimentConfig, *, path: str | None = None, preset: str | None = None,
        origin: tuple[str, ExperimentConfig | None] | None = None, id: str | None = None,
    ) -> None:
        """``origin``: (base, reference) a new experiment's default name is made from
        (default: the preset, else what :func:`~lotto_engine.naming.name_origin` finds)."""
        super().__init__(id=id)
        self._preset = preset if preset in (*PRESETS, "defaults") else None
        self._origin = origin or ((preset, None) if preset and not config.run.name else name_origin(config))
        self._loaded_name = config.run.name  # run.name as loaded: a different one was typed here
        self.specs = field_specs()
        self._by_key = {s.key: s for s in self.specs}
        self._initial = config
        # Without a --config file, TOML goes beside the store, not into the working directory.
        self._path = path or str(default_toml(config))
        self._order: dict[str, list[str]] = {}
        self.config: ExperimentConfig | None = config
        self.problems: list[str] = []
        self._pending: Timer | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="config-bar"):
            yield Label("preset")
            picker: Select[str] = Select(
                [(name, name) for name in (*PRESETS, "defaults")], prompt="choose…", id="preset", compact=True
            )
            if self._preset is not None:
                picker.value = self._preset
            yield picker
            yield Label(" TOML")
            yield Input(self._path, id="toml-path", compact=True, placeholder="path/to/config.toml")
            yield Button("Load ^o", id="toml-load", compact=True)
            yield Button("Save ^s", id="toml-save", compact=True)
        yield Static("", id="config-preview", markup=False)
        yield Static("", id="config-problems")
        with VerticalScroll(id="config-fields"):
            section = None
            for spec in self.specs:
                head = spec.key.split(".")[0]
                if head != section:
                    section = head
                    yield Label(f"[{section}]", classes="section", markup=False)
                with Horizontal(classes="field"):
                    yield Label(spec.key.split(".")[1], classes="key")
                    yield self._widget(spec, _get(self._initial, spec.key))
                yield Static("", classes="error", id=spec.error_id)
        yield Static("", id="field-hint")

    def _widget(self, spec: FieldSpec, value: Any) -> Widget:
        tip = f"{spec.key}: {spec.description}"
        widget: Widget
        if spec.kind == "choice":
            widget = Select([(c, c) for c in spec.choices], value=value, allow_blank=False, compact=True, id=spec.dom_id)
        elif spec.kind == "flag":
            widget = Checkbox(_flag(value), value=bool(value), id=spec.dom_id)
        elif spec.kind == "names":
            self._order[spec.key] = list(value)
            widget = SelectionList[str](
                *(Selection(name, name, name in value) for name in spec.choices), compact=True, id=spec.dom_id
            )
        else:
            widget = Input(_text(value), compact=True, id=spec.dom_id)
        widget.tooltip = tip
        return widget

    def on_mount(self) -> None:
        self.validate_form()

    # ------------------------------------------------------------------ values

    def show_preview(self, text: str) -> None:
        """The line about what ``r`` would run (the app counts; the form shows)."""
        self.query_one("#config-preview", Static).update(text)

    def name_for(self, config: ExperimentConfig) -> tuple[str, str]:
        """(explicit, default) names for running ``config``: ``explicit`` is a run.name
        typed in the form ("" otherwise); ``default`` names a new experiment after the
        form's origin and what differs from it (``demo, lr=0.1``)."""
        name = config.run.name
        explicit = name if name and name != self._loaded_name else ""
        base, reference = self._origin
        return explicit, default_name(config, base, reference=reference)

    def load(self, config: ExperimentConfig, origin: tuple[str, ExperimentConfig | None] | None = None) -> None:
        """Show ``config`` in every field (no events per field), then validate once.
        ``origin`` names new experiments made from it (default: found from its name)."""
        self._origin = origin or name_origin(config)
        self._loaded_name = config.run.name
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed, SelectionList.SelectedChanged):
            for spec in self.specs:
                value = _get(config, spec.key)
                widget = self.query_one(f"#{spec.dom_id}")
                if isinstance(widget, Select):
                    widget.value = value
                elif isinstance(widget, Checkbox):
                    widget.value = bool(value)
                    widget.label = _flag(value)
                elif isinstance(widget, SelectionList):
                    self._order[spec.key] = list(value)
                    widget.deselect_all()
                    for name in value:
                        widget.select(name)
                elif isinstance(widget, Input):
                    widget.value = _text(value)
        self.validate_form()

    def read(self) -> tuple[dict[str, Any], list[str]]:
        """The form as a plain config mapping, and the problems parsing found."""
        data: dict[str, Any] = {}
        problems: list[str] = []
        for spec in self.specs:
            section, name = spec.key.split(".")
            widget = self.query_one(f"#{spec.dom_id}")
            try:
                value = self._value(spec, widget)
            except ConfigError as err:
                problems.extend(err.problems)
                continue
            data.setdefault(section, {})[name] = value
        return data, problems

    def _value(self, spec: FieldSpec, widget: Widget) -> Any:
        if isinstance(widget, (Select, Checkbox)):
            return widget.value
        if isinstance(widget, SelectionList):
            selected = set(widget.selected)
            kept = [n for n in self._order.get(spec.key, []) if n in selected]
            return kept + [n for n in spec.choices if n in selected and n not in kept]
        assert isinstance(widget, Input)
        text = widget.value.strip()
        if spec.annotation is str:
            return widget.value
        if spec.kind == "list":
            text = text if text.startswith("[") else f"[{text}]"
        elif not text:
            raise ConfigError([f"{spec.key}: a value is required"])
        try:
            return parse_override(f"{spec.key}={text}")[1]
        except ConfigError as err:
            raise ConfigError([p.removeprefix("--set ") for p in err.problems]) from None

    def validate_form(self) -> None:
        """Validate with the engine's model; show each problem under its field."""
        data, problems = self.read()
        config = None
        if not problems:
            try:
                config = validate(data)
            except ConfigError as err:
                problems = err.problems
        self.config, self.problems = config, problems
        if config is not None:
            self._remember_order(config)
        self._show_preset(config)
        self._show_problems(problems)
        self.post_message(self.Changed(config, problems))

    def _show_preset(self, config: ExperimentConfig | None) -> None:
        """The preset picker names the preset the form equals, and goes blank on an edit."""
        if self._preset is None:
            return
        preset = None if self._preset == "defaults" else self._preset
        if config is None or config != load_config(preset=preset, last={"run": config.run.model_dump()}):
            self._preset = None
            select = self.query_one("#preset", Select)
            with self.prevent(Select.Changed):
                select.clear()

    def _remember_order(self, config: ExperimentConfig) -> None:
        for key in _REGISTRIES:
            self._order[key] = list(_get(config, key))

    def _show_problems(self, problems: Iterable[str]) -> None:
        by_field: dict[str, list[str]] = {}
        general: list[str] = []
        for line in problems:
            spec = self._spec_of(line)
            (by_field.setdefault(spec.key, []) if spec else general).append(line)
        for spec in self.specs:
            error = self.query_one(f"#{spec.error_id}", Static)
            lines = by_field.get(spec.key, [])
            error.update("\n".join(lines))
            error.set_class(bool(lines), "-shown")
        box = self.query_one("#config-problems", Static)
        box.update("\n".join(general))
        box.set_class(bool(general), "-shown")

    def _spec_of(self, line: str) -> FieldSpec | None:
        head = line.split(":", 1)[0]
        key = head.split("[", 1)[0].strip()
        if key in self._by_key:
            return self._by_key[key]
        # model-level problems name their key first ("prune.rewind: epoch 9 is past ...")
        rest = line.split(":", 1)[1].strip() if ":" in line else ""
        first = rest.split(":", 1)[0].strip()
        return self._by_key.get(first)

    # ------------------------------------------------------------------ events

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(SelectionList.SelectedChanged)
    def _edited(self, event: Message) -> None:
        control = getattr(event, "control", None) or getattr(event, "selection_list", None)
        if isinstance(control, Checkbox):
            control.label = _flag(control.value)
        if control is not None and control.id in ("preset", "toml-path"):
            return
        if isinstance(event, Input.Changed):
            # typing: validate once the keys stop coming, not on every keystroke
            if self._pending is not None:
                self._pending.stop()
            self._pending = self.set_timer(self.TYPING_PAUSE, self._validate_typed)
            return
        self.validate_form()

    def _validate_typed(self) -> None:
        self._pending = None
        self.validate_form()

    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or event.value == self._preset:
            return
        name = str(event.value)
        run = self.config.run.model_dump() if self.config else {}  # where and how to run stays
        config = load_config(preset=None if name == "defaults" else name, last={"run": run})
        self._preset = name
        loaded = self._loaded_name  # run.name stays, and so does whether it was typed
        self.load(config, origin=(DEFAULTS if name == "defaults" else name, None))
        self._loaded_name = loaded
        self.notify(f"Loaded preset {name}", timeout=3)

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        widget = event.widget
        spec = next((s for s in self.specs if s.dom_id == widget.id), None)
        hint = self.query_one("#field-hint", Static)
        hint.update(f"{spec.key}: {spec.description}" if spec else "")

    @on(Button.Pressed, "#toml-load")
    def _load_pressed(self) -> None:
        self.action_load_toml()

    @on(Button.Pressed, "#toml-save")
    def _save_pressed(self) -> None:
        self.action_save_toml()

    @on(Input.Submitted, "#toml-path")
    def _path_submitted(self) -> None:
        self.action_load_toml()

    def _toml_path(self) -> Path:
        """The path field's file, absolute (notices name exactly what was read or written)."""
        text = self.query_one("#toml-path", Input).value.strip()
        path = Path(text).expanduser() if text else default_toml(self.config or self._initial)
        return path.absolute()

    def action_load_toml(self) -> None:
        path = self._toml_path()
        try:
            config = load_config(file=path)
        except ConfigError as err:
            self._show_problems(err.problems)
            self.notify(err.problems[0], title="Cannot load the config", severity="error")
            return
        self.load(config, origin=name_origin(config) if config.run.name else (path.stem, config))
        self.notify(f"Loaded {path}", timeout=3)

    def action_save_toml(self) -> None:
        path = self._toml_path()
        if self.config is None:
            self.notify("Fix the problems shown in red first", title="Not saved", severity="error")
            return
        try:
            write_text_atomic(path, render_toml(self.config, header="Saved by the lotto-tui explorer."))
        except OSError as err:
            self.notify(f"{path}: {err.strerror or err}", title="Not saved", severity="error")
            return
        self.notify(f"Saved {path}", timeout=3)
