"""NewSessionScreen: the form for a new run, validated in place as you type.

Dismisses with a validated `RunConfig` when started, or None when cancelled. Pre-filled with
the offline defaults, so on a first launch a single Enter (focus starts on Start) runs
something real.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from engine.config import RunConfig
from gpta_tui import form
from gpta_tui.form import FIELDS, Field
from gpta_tui.formatting import description_size
from gpta_tui.widgets.key_footer import KeyFooter


class NewSessionScreen(Screen[RunConfig | None]):
    CSS_PATH = "new_session.tcss"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run", priority=True),
        Binding("escape", "cancel", "Back"),
    ]

    def __init__(self, values: dict[str, str], taken: set[str] | None = None,
                 first_launch: bool = False) -> None:
        super().__init__()
        self.initial = dict(values)
        self.taken = set(taken or ())
        self.first_launch = first_launch
        self.errors: dict[str, str] = {}
        self._preset = self.initial.get("preset", "")

    # ---- layout --------------------------------------------------------------------
    def _widget(self, f: Field):
        value = self.initial.get(f.id, "")
        if f.kind == "choice":
            return Select([(c, c) for c in f.choices], value=value if value in f.choices else f.choices[0],
                          allow_blank=False, id=f"f-{f.id}", compact=True)
        if f.kind == "multiline":
            return TextArea(value, id=f"f-{f.id}", soft_wrap=True, compact=True,
                            placeholder="empty: use the dataset's own description")
        if f.kind == "int":
            return Input(value, id=f"f-{f.id}", restrict=r"-?\d*", compact=True)
        placeholder = "default: $OPENAI_BASE_URL or api.openai.com" if f.id == "ta_base_url" else f.help
        return Input(value, id=f"f-{f.id}", placeholder=placeholder, compact=True)

    def _row(self, f: Field) -> Vertical:
        parts = [Label(f.label, classes="field-label"), self._widget(f)]
        if f.help:
            parts.append(Label(f.help, classes="field-help"))
        if f.kind == "multiline":
            parts.append(Static(description_size(self.initial.get(f.id, "")), id=f"size-{f.id}",
                                classes="field-help"))
        error = Label("", id=f"err-{f.id}", classes="field-error")
        error.display = False
        parts.append(error)
        return Vertical(*parts, classes=f"field field-{f.kind}", id=f"row-{f.id}")

    def compose(self) -> ComposeResult:
        by_id = form.FIELD_BY_ID
        with VerticalScroll(id="form"):
            title = "Welcome to gpta-tui: your first run" if self.first_launch else "New session"
            yield Static(title, id="form-title")
            if self.first_launch:
                yield Static("These are the offline defaults: a MiniLM student, the built-in Twitter "
                             "sentiment data and a local Gemma 3 270M teaching assistant. Press Enter "
                             "to start, or change anything first.", id="form-intro")
            with Grid(id="form-top"):
                for fid in ("name", "preset", "mode"):
                    yield self._row(by_id[fid])
            yield self._row(by_id["dataset"])
            yield self._row(by_id["description"])
            with Grid(id="form-models"):
                for fid in ("student", "ta_backend", "ta_model", "ta_base_url", "finetune_backend"):
                    yield self._row(by_id[fid])
            with Grid(id="form-numbers"):
                for fid in form.NUMBER_FIELDS:
                    yield self._row(by_id[fid])
            yield Label("", id="err-form", classes="field-error")
            with Horizontal(id="form-buttons"):
                yield Button("Start run", id="start", variant="success")
                yield Button("Cancel", id="cancel")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._update_mode_fields()
        self.validate()
        # Start has the focus (one Enter runs the defaults), but the form opens at its top: the
        # title and the intro that says so stay in view on a short terminal
        self.query_one("#start", Button).focus(scroll_visible=False)

    # ---- values and validation -------------------------------------------------------
    def values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in FIELDS:
            widget = self.query_one(f"#f-{f.id}")
            if isinstance(widget, TextArea):
                out[f.id] = widget.text
            elif isinstance(widget, Select):
                out[f.id] = str(widget.value)
            else:
                out[f.id] = widget.value
        return out

    def validate(self) -> RunConfig | None:
        config, errors = form.validate(self.values(), self.taken)
        self.errors = errors
        for f in FIELDS:
            message = errors.get(f.id, "")
            label = self.query_one(f"#err-{f.id}", Label)
            label.update(Text(message))  # may quote what was typed: never markup
            label.display = bool(message)
            self.query_one(f"#row-{f.id}").set_class(bool(message), "-invalid")
        general = self.query_one("#err-form", Label)
        general.update(Text(errors.get("form", "")))
        general.display = "form" in errors
        self.query_one("#start", Button).disabled = bool(errors)
        return config

    def _update_mode_fields(self) -> None:
        mode = str(self.query_one("#f-mode", Select).value)
        for fid in ("ta_backend", "ta_model", "ta_base_url", "finetune_backend"):
            self.query_one(f"#row-{fid}").set_class(mode == "baseline", "-unused")

    @on(Input.Changed)
    def _changed(self) -> None:
        self.validate()

    @on(TextArea.Changed)
    def _text_changed(self, event: TextArea.Changed) -> None:
        self.query_one(f"#size-{(event.text_area.id or '').removeprefix('f-')}", Static).update(
            description_size(event.text_area.text))
        self.validate()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "f-preset" and str(event.value) != self._preset:
            self._preset = str(event.value)
            for fid, value in form.preset_numbers(str(event.value)).items():
                self.query_one(f"#f-{fid}", Input).value = value
        if event.select.id == "f-mode":
            self._update_mode_fields()
        self.validate()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_cancel()

    def action_start(self) -> None:
        config = self.validate()
        if config is None:
            first = next(iter(self.errors))
            self.notify(f"{form.FIELD_BY_ID[first].label if first in form.FIELD_BY_ID else 'Form'}: "
                        f"{self.errors[first]}", severity="error", timeout=4, markup=False)
            return
        self.dismiss(config)

    def action_cancel(self) -> None:
        self.dismiss(None)
