"""Exports: the depth and training GIFs, samples as CSV, the views as PNG and the model as bytes."""

from __future__ import annotations

import csv
import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from flowviz.core.build import build_flow
from flowviz.core.checkpoint import load_model, model_bytes, save_model
from flowviz.core.grid import GridRequest, evaluate_grid
from flowviz.core.spec import ExperimentSpec, ViewSpec
from flowviz.core.training import Trainer
from flowviz.figures import TrainingRecorder, depth_frame_count, depth_gif, samples_csv, training_gif, views_png


@pytest.fixture(scope="module")
def trained():
    """A two-layer RealNVP after 40 steps on 8 Gaussians, with a training recording every 10 steps."""
    spec = ExperimentSpec.from_dict({
        "title": "tiny", "seed": 1,
        "layers": [{"type": "affine_coupling", "settings": {"hidden": 16, "transformed": "z2"}},
                   {"type": "affine_coupling", "settings": {"hidden": 16, "transformed": "z1"}}],
        "target": {"name": "8gaussians"},
        "training": {"steps": 40, "batch_size": 256, "learning_rate": 0.01, "eval_every": 40, "test_size": 512},
        "view": {"resolution": 32},
    })
    trainer = Trainer(spec)
    recorder = TrainingRecorder(spec.view, title=spec.title, total_steps=40, samples=200, seed=spec.seed)
    recorder.record(trainer.flow, 0)

    def every_ten(step: int, loss: float, _evaluation) -> None:
        if step % 10 == 0:
            recorder.record(trainer.flow, step, loss)

    trainer.run(40, every_ten)
    return spec, trainer, recorder


def frames(data: bytes) -> tuple[Image.Image, list[np.ndarray]]:
    gif = Image.open(io.BytesIO(data))
    return gif, [np.asarray(frame.convert("RGB"), np.int16) for frame in ImageSequence.Iterator(gif)]


def test_depth_gif_loops_through_every_layer(trained):
    spec, trainer, _ = trained
    data = depth_gif(trainer.flow, spec, frames_per_layer=3, size_px=120, samples=200)
    gif, images = frames(data)
    assert gif.format == "GIF" and gif.is_animated and gif.info["loop"] == 0
    assert gif.n_frames == len(images) == depth_frame_count(2, 3) == 7
    assert gif.width == 120 + 20 and gif.height > 120
    # The base (a Gaussian) and the output (eight modes) differ over much of the plot.
    changed = np.abs(images[0] - images[-1]).sum(-1) > 30
    assert changed.mean() > 0.1
    gif.seek(0)
    first = gif.info["duration"]
    gif.seek(1)
    assert first > gif.info["duration"]  # the base holds; the glide runs on
    assert len(data) < 400_000


def test_training_gif_shows_the_model_changing(trained):
    _, _, recorder = trained
    assert [frame.step for frame in recorder.frames] == [0, 10, 20, 30, 40]
    assert np.isnan(recorder.frames[0].loss) and np.isfinite(recorder.frames[-1].loss)
    gif, images = frames(recorder.gif(size_px=120))
    assert gif.is_animated and gif.n_frames == 5 and gif.info["loop"] == 0 and gif.width == 140
    assert all(np.abs(a - b).sum(-1).astype(bool).mean() > 0.02 for a, b in itertools.pairwise(images))
    assert (np.abs(images[0] - images[-1]).sum(-1) > 30).mean() > 0.1


def test_training_gif_takes_views_the_app_already_has(trained):
    spec, trainer, _ = trained
    base = trainer.flow.base.sample(100, torch.Generator().manual_seed(0))
    views = evaluate_grid(trainer.flow, GridRequest.from_view(spec.view), base)
    recorder = TrainingRecorder(spec.view)
    recorder.add(40, 2.5, views)
    recorder.add(41, 2.4, views.log_q[-1], views.samples[-1])  # or the arrays alone
    first, second = recorder.frames
    assert np.array_equal(first.log_q, views.log_q[-1]) and first.samples.shape == (100, 2)
    assert first.colors is not None and second.colors is None
    gif, _ = frames(training_gif(recorder.frames, spec.view, size_px=100, vmax=0.2))
    assert gif.n_frames == 2 and gif.width == 120


def test_recorder_keeps_few_evenly_spaced_frames_and_the_latest():
    recorder = TrainingRecorder(ViewSpec(resolution=8), max_frames=10)
    for step in range(1, 101):
        recorder.add(step, 1.0 / step, np.zeros((8, 8)))
        assert len(recorder) <= 10
    steps = [frame.step for frame in recorder.frames]
    assert steps[0] == 1 and steps[-1] == 100 and len(steps) >= 5
    assert len(set(np.diff(steps[:-1]))) == 1  # evenly spaced, before the latest


def test_samples_csv_follows_the_model(trained):
    _, trainer, _ = trained
    flow = trainer.flow.eval()
    data = samples_csv(flow, 3000, seed=5)
    assert data == samples_csv(flow, 3000, seed=5)
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == ["x", "y"] and len(rows) == 3001
    points = torch.tensor([[float(x), float(y)] for x, y in rows[1:]])
    assert torch.isfinite(points).all()
    with torch.no_grad():
        exported = flow.log_prob(points).mean()
        fresh = flow.log_prob(flow.sample(3000, torch.Generator().manual_seed(6))).mean()
        base = flow.log_prob(torch.randn(3000, 2, generator=torch.Generator().manual_seed(7))).mean()
    assert abs(float(exported - fresh)) < 0.1
    assert abs(float(fresh - base)) > 0.3  # the check above can tell q from something else


def test_model_bytes_round_trip_through_a_safe_load(trained, tmp_path):
    spec, trainer, _ = trained
    data = model_bytes(trainer.flow, spec, 40)
    raw = torch.load(io.BytesIO(data), weights_only=True)
    assert raw["format"] == "flowviz-model" and raw["step"] == 40
    save_model(tmp_path / "model.pt", trainer.flow, spec, 40)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(3)) * 2
    with torch.no_grad():
        expected = trainer.flow.eval().log_prob(x)
        for source in (data, io.BytesIO(data), tmp_path / "model.pt"):
            flow, loaded_spec, step = load_model(source)
            assert loaded_spec == spec and step == 40
            assert torch.equal(flow.eval().log_prob(x), expected)
    with pytest.raises(ValueError, match="not a flowviz model file"):
        load_model(b"not a model")


def test_a_model_saved_before_the_spline_coupling_changed_direction_is_refused_only_with_a_spline():
    """Version 1 files: a spline coupling's weights meant the inverse map then, so such a file would
    load into another flow; every other version-1 file still loads."""
    def version_1(spec):
        data = torch.load(io.BytesIO(model_bytes(build_flow(spec), spec)), weights_only=True)
        buffer = io.BytesIO()
        torch.save({**data, "version": 1}, buffer)
        return buffer.getvalue()

    planar = ExperimentSpec.from_dict({"layers": [{"type": "planar"}]})
    assert load_model(version_1(planar))[1] == planar
    spline = ExperimentSpec.from_dict({"layers": [{"type": "spline_coupling"}]})
    with pytest.raises(ValueError, match="spline coupling ran its spline the other way.*train it again"):
        load_model(version_1(spline))


def test_views_png_is_a_png(trained):
    spec, trainer, _ = trained
    data = views_png(trainer.flow, trainer.target, spec, resolution=16, samples=100)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(data)).width > 400
