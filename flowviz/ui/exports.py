"""What the Export buttons download, each made from a copy of the weights so training need not stop:
a PNG of the per-layer views, GIFs of the flow through depth and of this run's training, the model
(weights + spec, read back with `torch.load(weights_only=True)`) and samples as CSV.

Example:
    >>> from flowviz.core.spec import ExperimentSpec
    >>> state = ExperimentState(ExperimentSpec.from_dict({"layers": [{"type": "planar"}], "view": {"resolution": 16}}))
    >>> exports = Exports(state)
    >>> exports.views_png().getvalue()[:4]
    b'\\x89PNG'
    >>> exports.training_gif().getvalue(), state.message[:27]
    (b'', 'Train for a few steps first')
    >>> state.close()
"""

from __future__ import annotations

import io
from collections.abc import Callable

import param

from flowviz.core.checkpoint import model_bytes
from flowviz.figures import TrainingRecorder, depth_gif, samples_csv, views_png
from flowviz.ui.state import ExperimentState

SAMPLES = 2000


class Exports(param.Parameterized):
    """The files of the Experiment card's Export buttons; records this run's frames for the training GIF."""

    state = param.ClassSelector(class_=ExperimentState)

    def __init__(self, state: ExperimentState, **params):
        super().__init__(state=state, **params)
        self._start_recording()
        self._record()

    def files(self) -> list[tuple[str, str, Callable[[], io.BytesIO]]]:
        """(button label, file name, what makes the file) for each export."""
        return [("PNG of the per-layer views", "flowviz-views.png", self.views_png),
                ("GIF: the flow through depth", "flowviz-through-depth.gif", self.depth_gif),
                ("GIF: training so far", "flowviz-training.gif", self.training_gif),
                ("Trained model (weights + spec, .pt)", "flowviz-model.pt", self.model_file),
                (f"{SAMPLES} samples of the model (CSV)", "flowviz-samples.csv", self.samples_file)]

    def _start_recording(self) -> None:
        spec = self.state.spec
        self._recording_view = (spec.target, spec.view)
        self.recorder = TrainingRecorder(spec.view, title=spec.title)

    @param.depends("state.spec", watch=True)
    def _follow_view(self) -> None:
        """A new target or view box: the GIF's frames would not match, so the recording starts over."""
        if (self.state.spec.target, self.state.spec.view) != self._recording_view:
            self._start_recording()

    @param.depends("state.frame", watch=True)
    def _record(self) -> None:
        frame, live = self.state.frame, self.state.live
        if frame is None or frame.kind == "preview":  # the exact frame of this step follows
            return
        if frame.step == 0 or (self.recorder.frames and frame.step < self.recorder.frames[-1].step):
            self._start_recording()  # a reset, a new seed or a new curve: this run starts over
        if not self.recorder.frames or frame.step != self.recorder.frames[-1].step:
            self.recorder.add(frame.step, live.losses[-1] if live.losses else float("nan"), frame.model,
                              frame.views.samples[-1], frame.views.samples[0])

    def views_png(self) -> io.BytesIO:
        return io.BytesIO(views_png(self.state.live.copy_flow(), self.state.live.trainer.target, self.state.spec))

    def depth_gif(self) -> io.BytesIO:
        return io.BytesIO(depth_gif(self.state.live.copy_flow(), self.state.spec))

    def training_gif(self) -> io.BytesIO:
        if len(self.recorder) < 2:
            self.state.say("Train for a few steps first (▶ Play or Step): the GIF shows the frames of this run.")
            return io.BytesIO(b"")
        return io.BytesIO(self.recorder.gif())

    def model_file(self) -> io.BytesIO:
        return io.BytesIO(model_bytes(self.state.live.copy_flow(), self.state.spec, self.state.live.step))

    def samples_file(self) -> io.BytesIO:
        return io.BytesIO(samples_csv(self.state.live.copy_flow(), SAMPLES, self.state.spec.seed))
