"""The sidebar's cards and the presentation card, one job each, each taking the `ExperimentState`.

- `ExperimentCard`: presets, preset files, the link, and the exports.
- `TargetCard`: target thumbnails, the target's settings, uploaded points.
- `BaseCard`: the base distribution and its settings.
- `TrainingCard`: the training settings, the seed, the device and the paused grid resolution.
- `PresentationCard`: projector mode and the panels to hide.

Every form comes from `Setting` declarations (forms.py). A form edits one field through the state;
when the state's `spec` changes (or a refused edit re-announces it), the form shows it again.
"""

from __future__ import annotations

import io

import panel as pn
import param

from flowviz.core.bases import BASES
from flowviz.core.devices import available_devices
from flowviz.core.link import LINK_PARAMETER, MAX_LINK_CHARS, spec_to_link
from flowviz.core.pointfile import MAX_UPLOAD_BYTES
from flowviz.core.presets import preset_files
from flowviz.core.spec import (
    MAX_SPEC_BYTES,
    PRESENTATION_SETTINGS,
    SEED,
    TRAINING_SETTINGS,
    VIEW_SETTINGS,
    ExperimentSpec,
)
from flowviz.core.targets import TARGETS
from flowviz.ui.exports import Exports
from flowviz.ui.forms import SettingsForm
from flowviz.ui.layout import PANELS
from flowviz.ui.pickers import FileUpload, TargetPicker, target_options
from flowviz.ui.state import ExperimentState
from flowviz.ui.views import StateView

UPLOAD_TYPES = ".csv,.tsv,.txt,.dat,.npy,.json,.png,.jpg,.jpeg"
TRAINING_FORM = ("objective", "learning_rate", "batch_size", "grad_clip", "anneal_steps")
NO_PRESET = "(choose a preset)"
CARD = {"sizing_mode": "stretch_width", "collapsible": True, "margin": (4, 0)}


class ExperimentCard(StateView):
    """Presets, preset files, the link to this experiment, and downloads made from a copy of the weights."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        self.presets = {title: path for title, path in preset_files().values()}  # title -> file
        self.preset_select = pn.widgets.Select(label="Preset", options=[NO_PRESET, *self.presets])
        self.preset_select.param.watch(self._choose_preset, "value")
        self.preset_upload = FileUpload(accept=".json", max_bytes=MAX_SPEC_BYTES, label="Open a preset file",
                                        sizing_mode="stretch_width")
        self.preset_upload.param.watch(lambda event: event.new is None or state.open_preset_file(event.new), "value")
        self.preset_upload.param.watch(lambda event: state.refused(event.new, "the current experiment"), "error")
        self.download = pn.widgets.FileDownload(callback=self.preset_file, filename="flowviz-experiment.json",
                                                label="Download this experiment", color="default",
                                                sizing_mode="stretch_width")
        self.link = pn.widgets.TextInput(label="Link to this experiment (seed included)", sizing_mode="stretch_width")
        export = {"color": "default", "sizing_mode": "stretch_width", "margin": (2, 5)}
        self.exports = Exports(state)
        self.export_buttons = [pn.widgets.FileDownload(callback=callback, filename=filename, label=label, **export)
                               for label, filename, callback in self.exports.files()]
        self.show_link()

    def _choose_preset(self, event) -> None:
        path = self.presets.get(event.new)
        if path is not None:
            self.state.load(ExperimentSpec.load(path))

    def preset_file(self) -> io.StringIO:
        return io.StringIO(self.state.spec.to_json() + "\n")

    @param.depends("state.spec", watch=True)
    def show_link(self) -> None:
        """The link field, and the address bar, hold the whole experiment."""
        packed = spec_to_link(self.state.spec)
        if len(packed) > MAX_LINK_CHARS:
            self.link.value = "(too many points for a link: download the experiment instead)"
            return
        location = pn.state.location
        if location is not None and pn.state.curdoc is not None:
            location.update_query(**{LINK_PARAMETER: packed})
            port = f":{location.port}" if location.port else ""
            origin = f"{location.protocol}//{location.hostname}{port}{location.pathname}" if location.hostname else ""
            self.link.value = f"{origin}?{LINK_PARAMETER}={packed}"
        else:
            self.link.value = f"?{LINK_PARAMETER}={packed}"

    def __panel__(self):
        return pn.Card(self.preset_select, pn.pane.Markdown("Open a preset file:", margin=(0, 5)), self.preset_upload,
                       self.download, self.link, pn.pane.Markdown("**Export**", margin=(6, 5, 0, 5)),
                       *self.export_buttons, title="Experiment", **CARD)


class TargetCard(StateView):
    """Target thumbnails, the chosen target's settings, and uploaded points or pictures."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        self.picker = TargetPicker(options=target_options(), sizing_mode="stretch_width")
        self.picker.param.watch(lambda event: state.set_target(event.new), "value")
        self.upload = FileUpload(accept=UPLOAD_TYPES, max_bytes=MAX_UPLOAD_BYTES, label="Upload points or a picture",
                                 sizing_mode="stretch_width")
        self.upload.param.watch(lambda event: event.new is None or state.upload(event.new, self.upload.filename),
                                "value")
        self.upload.param.watch(lambda event: state.refused(event.new, "the current target"), "error")
        self.note = pn.pane.Markdown("", margin=(0, 5), styles={"font-size": "13px"})
        self.form_holder = pn.Column(margin=0, sizing_mode="stretch_width")
        self._form_for: str | None = None
        self._show()

    @param.depends("state.spec", "state.target_source", watch=True)
    def _show(self) -> None:
        target = self.state.spec.target
        self.picker.value = target.name if target.name != "points" else ""
        if self._form_for != target.name:
            self._form_for = target.name
            self.form = SettingsForm(TARGETS[target.name].info.settings, target.settings, self.state.set_target_setting)
            self.form_holder.objects = [self.form.panel]
        self.form.show(target.settings)
        if target.name == "points":
            source = self.state.target_source or f"{len(target.points):,} points"
            self.note.object = f"**Training on your points:** {source}."
        elif target.image is not None:
            source = self.state.target_source or "the uploaded picture"
            self.note.object = f"**Training on your picture:** {source}."
        else:
            self.note.object = ("Or your own: points (a CSV/TSV/text file of two numeric columns x, y, a header row is "
                                "fine; a .npy array of shape (N, 2); a JSON list of [x, y]) or a PNG or JPEG picture, "
                                "whose dark pixels become the density.")

    def __panel__(self):
        return pn.Card(self.picker, self.form_holder, self.note, self.upload, title="Target", **CARD)


class BaseCard(StateView):
    """The base distribution, learned or fixed, and its settings."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        self.select = pn.widgets.Select(label="Base distribution", options={b.info.title: n for n, b in BASES.items()},
                                        value=state.spec.base.name)
        self.select.param.watch(lambda event: state.set_base(name=event.new), "value")
        self.learnable = pn.widgets.Checkbox(label="learn the base's parameters too", value=state.spec.base.learnable)
        self.learnable.param.watch(lambda event: state.set_base(learnable=event.new), "value")
        self.form_holder = pn.Column(margin=0, sizing_mode="stretch_width")
        self.by_hand = pn.widgets.Button(label="Move it by hand", color="primary", variant="outline",
                                         css_classes=["fv-base-by-hand"])
        self.by_hand.on_click(lambda _event: state.hold("base"))
        self._form_for: str | None = None
        self._show()

    @param.depends("state.spec", watch=True)
    def _show(self) -> None:
        base = self.state.spec.base
        self.select.value, self.learnable.value = base.name, base.learnable
        if self._form_for != base.name:
            self._form_for = base.name
            self.form = SettingsForm(BASES[base.name].info.settings, base.settings, self.state.set_base_setting)
            self.form_holder.objects = [self.form.panel]
        self.form.show(base.settings)
        # Hand mode moves a learned base (a fixed one is what its settings say)
        self.by_hand.visible = bool(BASES[base.name].info.handles) and base.learnable

    def __panel__(self):
        return pn.Card(self.select, self.learnable, self.form_holder, self.by_hand, title="Base distribution", **CARD)


# Measured on an H200 (docs/benchmarks.md, CUDA): the grid 16x faster at 256²; a maximum-likelihood step as
# one CUDA graph 5-6x the same machine's 16-core CPU, an eager step 1.6x slower than it.
DEVICE_HINT = ("On a GPU the views are much faster at high resolutions, and training runs each step as one "
               "CUDA graph: several times the CPU's steps. Flow matching, a learnable base under reverse KL, "
               "and, on target samples, layers inverted by iteration (planar, Sylvester, i-ResNet) step "
               "kernel by kernel there, often slower than on the CPU.")


class TrainingCard(StateView):
    """The training settings, the seed, the paused grid's resolution (all from their `Setting`s) and the device."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        spec = state.spec
        self.training = SettingsForm(TRAINING_SETTINGS, vars(spec.training), state.set_training, names=TRAINING_FORM)
        self.seed = SettingsForm((SEED,), {"seed": spec.seed}, lambda _name, value: state.set_seed(value))
        self.view = SettingsForm(VIEW_SETTINGS, vars(spec.view), state.set_view, names=("resolution",))
        devices = available_devices()
        self.device = pn.widgets.Select(label="Device", options=devices, value=state.device, description=(
            DEVICE_HINT if len(devices) > 1 else None))
        self.device.param.watch(lambda event: state.set_device(event.new), "value")
        self.widgets = {**self.training.widgets, **self.seed.widgets, **self.view.widgets, "device": self.device}

    @param.depends("state.spec", "state.device", watch=True)
    def _show(self) -> None:
        spec = self.state.spec
        self.training.show(vars(spec.training))
        self.seed.show({"seed": spec.seed})
        self.view.show(vars(spec.view))
        self.device.value = self.state.device

    def __panel__(self):
        return pn.Card(self.training.panel, self.seed.panel, self.device, self.view.panel, title="Training", **CARD)


class PresentationCard(StateView):
    """Projector mode and the panels to hide: both part of the experiment (its link and its file)."""

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state, **params)
        presentation = state.spec.presentation
        self.projector = SettingsForm(PRESENTATION_SETTINGS, {"projector": presentation.projector},
                                      lambda _name, value: state.set_presentation(projector=value), names=("projector",))
        self.hidden = pn.widgets.CheckBoxGroup(options={panel.label: panel.name for panel in PANELS}, inline=True,
                                               value=list(presentation.hidden))
        self.hidden.param.watch(lambda event: state.set_presentation(hidden=event.new), "value")

    @param.depends("state.spec", watch=True)
    def _show(self) -> None:
        presentation = self.state.spec.presentation
        self.projector.show({"projector": presentation.projector})
        if set(self.hidden.value) != set(presentation.hidden):
            self.hidden.value = list(presentation.hidden)

    def __panel__(self):
        return pn.Card(self.projector.panel,
                       pn.pane.Markdown("Hide (saved in the link and in downloaded presets):", margin=(0, 5)),
                       self.hidden, title="Presentation", collapsed=True, sizing_mode="stretch_width", margin=(4, 0))
