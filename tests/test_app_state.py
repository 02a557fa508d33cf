"""The explorer's state and callbacks, without a browser: the layer stack, the live session and the
page's reactions to edits, files and links."""

import copy
import dataclasses
import itertools
import threading
import time
import warnings

import numpy as np
import panel as pn
import pytest
import torch

from flowviz.core.grid import GridRequest, output_log_prob
from flowviz.core.link import spec_to_link
from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer
from flowviz.ui import cards
from flowviz.ui import live as live_module
from flowviz.ui.explorer import Explorer
from flowviz.ui.live import ComputeGate, LiveSession
from flowviz.ui.stack import LayerStack
from flowviz.ui.state import ExperimentState
from tests.test_fuzz import send_file

MOONS = ExperimentSpec.from_dict({
    "target": {"name": "moons"},
    "layers": [{"type": "affine_coupling", "settings": {"transformed": t}} for t in ("z2", "z1", "z2", "z1")],
    "training": {"learning_rate": 3e-3, "batch_size": 256, "eval_every": 20},
    "view": {"resolution": 32},
})


def flowviz_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("flowviz-")]


def wait_for(condition, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


# -- the layer stack --------------------------------------------------------------------------------
def test_stack_add_move_toggle_remove():
    stack = LayerStack()
    for layer in ("planar", "radial", "swap"):
        stack.act({"action": "add", "type": layer})
    stack.act({"action": "add", "type": "actnorm", "index": 0})
    assert [i["type"] for i in stack.items] == ["actnorm", "planar", "radial", "swap"]
    ids = stack.ids()
    stack.act({"action": "move", "from": 3, "to": 1})  # drop "swap" before "planar"
    assert [i["type"] for i in stack.items] == ["actnorm", "swap", "planar", "radial"]
    stack.act({"action": "move", "from": 0, "to": 4})  # to the output end
    assert [i["type"] for i in stack.items] == ["swap", "planar", "radial", "actnorm"]
    assert sorted(stack.ids()) == sorted(ids)  # ids follow the layers
    stack.act({"action": "toggle", "index": 1})
    assert [i["enabled"] for i in stack.items] == [True, False, True, True]
    stack.act({"action": "remove", "index": 0})
    assert [i["type"] for i in stack.items] == ["planar", "radial", "actnorm"]
    assert stack.message == ""


@pytest.mark.parametrize("action", [
    {"action": "add", "type": "no_such_layer"},
    {"action": "remove", "index": 7},
    {"action": "move", "from": "0", "to": 1},
    {"action": "explode"},
])
def test_stack_refuses_bad_actions_and_keeps_the_stack(action):
    stack = LayerStack()
    stack.act({"action": "add", "type": "planar"})
    before = list(stack.items)
    stack.act(action)
    assert stack.items == before
    assert stack.message


def test_stack_enforces_the_layer_limit():
    stack = LayerStack()
    for _ in range(32):
        stack.act({"action": "add", "type": "swap"})
    stack.act({"action": "add", "type": "swap"})
    assert len(stack.items) == 32
    assert "at most 32" in stack.message


def test_stack_messages_from_the_browser_are_actions():
    stack = LayerStack()
    stack._handle_msg({"action": "add", "type": "radial"})
    stack._handle_msg("not a dict")
    assert [i["type"] for i in stack.items] == ["radial"]


# -- the live session -------------------------------------------------------------------------------
def test_an_edit_keeps_the_weights_of_untouched_layers():
    live = LiveSession(MOONS)
    for _ in range(30):
        live.step_once()
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    before = live.flow.log_prob(x).detach()
    kept = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in live.flow.layers]

    # Add an affine coupling (a fresh one is the identity) in the middle, and switch nothing off.
    layers = list(MOONS.layers)
    layers.insert(2, layers[0])
    spec = MOONS.replace(layers=[{"type": l.type, "settings": l.settings} for l in layers])
    live.apply(spec, [0, 1, 10, 2, 3])
    assert live.step == 30  # the same curve goes on
    for old, new in zip(kept, [live.flow.layers[i] for i in (0, 1, 3, 4)]):
        for key, value in new.state_dict().items():
            torch.testing.assert_close(value, old[key], rtol=0, atol=0)
    torch.testing.assert_close(live.flow.log_prob(x).detach(), before, rtol=0, atol=1e-5)
    live.close()


def test_switching_a_layer_off_keeps_its_weights_and_skips_it():
    live = LiveSession(MOONS)
    for _ in range(20):
        live.step_once()
    weights = {k: v.clone() for k, v in live.flow.layers[1].state_dict().items()}
    off = MOONS.replace(layers=[{"type": l.type, "settings": l.settings, "enabled": i != 1}
                                for i, l in enumerate(MOONS.layers)])
    live.apply(off, [0, 1, 2, 3])
    assert [p for p, _ in live.flow.active()] == [0, 2, 3]
    assert len(live.render().views.layers) == 3
    live.apply(MOONS, [0, 1, 2, 3])
    for key, value in live.flow.layers[1].state_dict().items():
        assert torch.equal(value, weights[key])
    live.close()


def test_a_new_learning_rate_keeps_adams_state():
    live = LiveSession(MOONS)
    for _ in range(5):
        live.step_once()
    optimizer = live.trainer.optimizer
    live.apply(MOONS.replace(training={"learning_rate": 1e-4}), [0, 1, 2, 3])
    assert live.trainer.optimizer is optimizer
    assert optimizer.lr == 1e-4
    live.close()


def test_a_new_target_starts_a_new_curve():
    live = LiveSession(MOONS)
    for _ in range(5):
        live.step_once()
    live.apply(MOONS.replace(target={"name": "8gaussians"}), [0, 1, 2, 3])
    assert live.step == 0 and live.losses == []
    live.close()


@pytest.mark.slow
def test_playing_trains_renders_and_closing_stops_the_threads():
    live = LiveSession(MOONS)
    live.play()
    assert wait_for(lambda: live.step > 60 and live.frames_rendered > 3)
    frame = live.take_frame()
    assert frame is not None and frame.views.log_q.shape == (5, 32, 32)
    assert live.take_frame() is None or live.frames_rendered > 4  # each frame is taken once
    live.pause()
    time.sleep(0.3)
    paused_at = live.step
    time.sleep(0.3)
    assert live.step == paused_at
    losses = live.losses
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    live.close()
    assert flowviz_threads() == []


def test_slow_motion_renders_every_step():
    live = LiveSession(MOONS)
    live.steps_per_frame = 1
    live.play()
    assert wait_for(lambda: live.step >= 5)
    live.pause()
    time.sleep(0.2)
    # Each frame shows at most one new step: frames keep up with steps.
    assert live.frames_rendered >= live.step - 2
    live.close()


def _live_frames(live: LiveSession, count: int) -> list:
    frames: list = []
    deadline = time.time() + 30
    while len(frames) < count and time.time() < deadline:
        frame = live.take_frame()
        if frame is not None and frame.kind == "live":
            frames.append(frame)
        time.sleep(0.005)
    return frames


def _assert_shows(frame, trainer: Trainer) -> None:
    while trainer.step_count < frame.step:
        trainer.step()
    request = GridRequest.from_view(dataclasses.replace(MOONS.view, resolution=frame.model.shape[0]))
    np.testing.assert_allclose(frame.model, output_log_prob(trainer.flow, request), atol=1e-4)


def test_each_live_frame_shows_the_model_as_trained_to_its_step_and_as_last_edited():
    """The rendering thread copies only the trained tensors into its own copy of the model between
    edits: every live frame must still show the model of its step, and an edit the next frame."""
    live, reference = LiveSession(MOONS), Trainer(MOONS)  # the same seed: the same weights, step by step
    live.steps_per_frame = 1
    live.play()
    frames = _live_frames(live, 5)
    live.pause()
    time.sleep(0.3)  # a step under way when pausing still ends
    assert len(frames) == 5 and len({frame.step for frame in frames}) >= 3
    for frame in frames:
        _assert_shows(frame, reference)
    # Switch the last layer off (the same modules: only the flow's enabled flags change), train on.
    while reference.step_count < live.step:
        reference.step()
    layers = [*MOONS.layers[:-1], dataclasses.replace(MOONS.layers[-1], enabled=False)]
    edited = dataclasses.replace(MOONS, layers=layers)
    live.apply(edited, live.layer_ids)
    reference.retune(edited)
    reference.flow.enabled = [True, True, True, False]
    live.play()
    frames = _live_frames(live, 3)
    live.close()
    assert len(frames) == 3 and min(frame.step for frame in frames) >= reference.step_count
    for frame in frames:
        _assert_shows(frame, reference)


# -- the explorer -----------------------------------------------------------------------------------
@pytest.fixture
def explorer():
    page = Explorer(MOONS)
    yield page
    page.close()


def test_dragging_a_layer_in_changes_the_spec_and_the_plots(explorer):
    before = [np.array(a) for a in explorer.strips.density.images.data["density"]]
    explorer.layer_editor.stack.act({"action": "add", "type": "spline_coupling", "index": 0})
    assert [l.type for l in explorer.state.spec.layers][:2] == ["spline_coupling", "affine_coupling"]
    after = explorer.strips.density.images.data["density"]
    assert len(after) == len(before) + 1
    assert "k = 1\nRational" in explorer.strips.density.labels.data["text"][1]


def test_under_each_density_panel_the_kl_after_that_layer_and_its_change(explorer):
    frame = explorer.state.frame
    fit = explorer.strips.density.fit.data
    assert len(frame.kl_by_depth) == 5 and frame.kl_by_depth[-1] == pytest.approx(
        explorer.state.live.trainer.evaluate().kl, rel=1e-6)
    assert fit["text"] == [f"KL {value:.3f}".replace("-", "−") for value in frame.kl_by_depth]
    changes = [fell or rose or same for fell, rose, same in zip(fit["fell"], fit["rose"], fit["same"])]
    assert changes[0] == "" and all(change[0] in "+−±" for change in changes[1:])
    assert all(not fell or fell.startswith("−") for fell in fit["fell"])  # green: the layer lowered it
    assert explorer.strips.fit_note.visible and "KL(p‖q_k)" in explorer.strips.fit_note.object
    explorer.state.frame = dataclasses.replace(frame, kind="live", views=copy.copy(frame.views))
    assert explorer.strips.density.fit.data["text"][1].startswith("KL ≈ ")  # an estimate while training
    explorer.state.set_target("pinwheel")  # no exact density: no KL, no room for it
    assert explorer.state.frame.kl_by_depth is None and explorer.strips.density.fit.data["text"] == []
    assert not explorer.strips.fit_note.visible


def test_velocity_arrows_come_with_a_continuous_flow_only(explorer):
    """A flow without one sends no arrows (padded into the samples' source, they once cost 54 KiB of
    NaN a frame); adding a cnf draws v on a 9 × 9 grid in its panel, removing it clears them."""
    assert len(explorer.strips.samples.arrows.data["ax"]) == 0
    explorer.layer_editor.stack.act({"action": "add", "type": "cnf", "index": 0})
    assert len(explorer.strips.samples.arrows.data["ax"]) == 81
    explorer.layer_editor.stack.act({"action": "remove", "index": 0})
    assert "cnf" not in [layer.type for layer in explorer.state.spec.layers]
    assert len(explorer.strips.samples.arrows.data["ax"]) == 0


def test_a_step_moves_the_counter_and_the_views(explorer):
    model_before = np.array(explorer.overview.target_model.model.data["image"][0])
    explorer.state.step()
    assert explorer.state.live.step == 1
    assert "step <span id='fv-step'>1</span>" in explorer.toolbar.status.html
    assert not np.array_equal(model_before, explorer.overview.target_model.model.data["image"][0])


def test_panels_out_of_view_are_not_drawn_until_seen(explorer):
    """The page reports the frame panels it has scrolled away or hidden; frames skip them, and a panel
    that comes into view is drawn from the newest frame at once."""
    strips, model = explorer.strips, explorer.overview.target_model.model
    samples_before = np.array(strips.samples.points.data["x"])
    log_det_before = [np.array(a) for a in strips.density.images.data["log_det"]]
    model_before = np.array(model.data["image"][0])
    explorer.state.unseen = ["log_det", "overview", "samples"]
    explorer.state.step()
    frame = explorer.state.frame
    assert np.array_equal(strips.samples.points.data["x"], samples_before, equal_nan=True)
    assert all(np.array_equal(a, b) for a, b in zip(strips.density.images.data["log_det"], log_det_before))
    assert np.array_equal(model.data["image"][0], model_before)
    density = np.exp(frame.views.log_q)
    assert np.allclose(strips.density.images.data["density"][-1], density[-1], rtol=1e-6)  # the one in view moved
    explorer.state.unseen = ["overview"]
    assert not np.array_equal(strips.samples.points.data["x"], samples_before, equal_nan=True)
    assert np.allclose(strips.log_det.images.data["log_det"][-1], frame.views.log_det[-1], rtol=1e-6, atol=1e-7)
    explorer.state.unseen = []
    assert np.allclose(model.data["image"][0], np.exp(frame.model), rtol=1e-6)


def test_a_stack_edit_out_of_view_keeps_the_image_strips_one_length(explorer):
    """Both image strips read one source: a new depth count sends both columns, seen or not."""
    explorer.state.unseen = ["log_det"]
    explorer.layer_editor.stack.act({"action": "add", "type": "planar"})
    data = explorer.strips.density.images.data
    assert len(data["density"]) == len(data["log_det"]) == len(data["x"]) == 6


def test_live_frames_skip_what_no_panel_in_view_shows():
    live = LiveSession(MOONS)

    def live_frames(count: int) -> list:
        frames: list = []
        assert wait_for(lambda: frames.append(live.take_frame()) or len([f for f in frames if f]) >= count)
        return [frame for frame in frames if frame is not None]

    live.unseen = frozenset({"overview", "density", "log_det", "samples"})
    live.play()
    hidden = live_frames(4)
    assert all(frame.views is hidden[0].views and frame.model is hidden[0].model for frame in hidden)
    live.unseen = frozenset({"log_det", "samples"})
    seen = live_frames(4)
    assert all(frame.model is not hidden[0].model for frame in seen[1:])
    assert any(frame.views is not hidden[0].views for frame in seen[1:])
    live.close()


def test_the_loss_chart_axes_hold_every_value_on_round_numbers(explorer):
    for _ in range(37):
        explorer.state.live.step_once()
    explorer.state.render_now()
    chart, live = explorer.overview.loss.fig, explorer.state.live
    plotted = live.losses + [value for e in live.evaluations for value in (e.test_nll, e.kl, e.ess) if value is not None]
    assert (chart.x_range.start, chart.x_range.end) == (0, 50)
    assert chart.y_range.start <= min(plotted) and max(plotted) <= chart.y_range.end
    assert chart.y_range.end - chart.y_range.start <= 3 * (max(plotted) - min(plotted)) + 1e-9
    assert (chart.y_range.reset_start, chart.y_range.reset_end) == (chart.y_range.start, chart.y_range.end)


def test_a_bad_training_value_is_refused_and_nothing_changes(explorer):
    explorer.state.step()
    spec, weights = explorer.state.spec, {k: v.clone() for k, v in explorer.state.live.flow.state_dict().items()}
    explorer.training.widgets["grad_clip"].value = -1.0
    assert "training.grad_clip" in explorer.state.message
    assert explorer.state.spec == spec
    assert explorer.training.widgets["grad_clip"].value == spec.training.grad_clip  # the control snapped back
    for key, value in explorer.state.live.flow.state_dict().items():
        assert torch.equal(value, weights[key])


def test_reverse_kl_on_a_sample_only_target_says_what_to_do(explorer):
    explorer.target.picker.value = "checkerboard"
    assert explorer.state.spec.target.name == "checkerboard"
    explorer.training.widgets["objective"].value = "reverse_kl"
    assert "reverse KL needs a target density" in explorer.state.message
    assert explorer.state.spec.training.objective == "forward_kl"


def test_uploading_points_trains_on_them_and_a_bad_file_changes_nothing(explorer):
    points = np.random.default_rng(0).normal(size=(300, 2)) * [3, 1]
    csv = ("x,y\n" + "\n".join(f"{a},{b}" for a, b in points)).encode()
    send_file(explorer.target.upload, "mine.csv", csv)
    assert explorer.state.spec.target.name == "points" and len(explorer.state.spec.target.points) == 300
    assert "300 points from mine.csv" in explorer.target.note.object
    good = explorer.state.spec
    send_file(explorer.target.upload, "broken.csv", b"x,y\n1,2\n3,oops\n")
    assert "line 3" in explorer.state.message and "broken.csv" in explorer.state.message
    assert explorer.state.spec == good


def test_loading_a_preset_file_and_a_broken_one(explorer, presets):
    spec = ExperimentSpec.load(presets[0])
    send_file(explorer.experiment.preset_upload, "preset.json", spec.to_json().encode())
    assert explorer.state.spec == spec
    assert [i["type"] for i in explorer.layer_editor.stack.items] == [l.type for l in spec.layers]
    send_file(explorer.experiment.preset_upload, "bad.json", b'{"layers": [{"type": "planar", "settings": {"K": 3}}]}')
    assert "layers[0].settings.K" in explorer.state.message
    assert explorer.state.spec == spec


def test_the_preset_picker_loads_each_preset(explorer, presets):
    for title in explorer.experiment.presets:
        explorer.experiment.preset_select.value = title
        assert explorer.state.spec.title == title


def test_a_link_reopens_the_same_experiment(explorer):
    explorer.training.widgets["seed"].value = 42
    explorer.layer_editor.stack.act({"action": "add", "type": "radial"})
    reopened, problem = Explorer.from_link(spec_to_link(explorer.state.spec))
    assert problem == "" and reopened.state.spec == explorer.state.spec
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    fresh = Explorer(explorer.state.spec)
    torch.testing.assert_close(reopened.state.live.flow.log_prob(x), fresh.state.live.flow.log_prob(x), rtol=0, atol=0)
    reopened.close()
    fresh.close()


def test_a_broken_link_opens_the_default_and_says_so():
    page, problem = Explorer.from_link("not-a-link")
    assert "link" in problem and "damaged" in problem
    assert page.state.spec == ExperimentSpec()
    page.close()


def test_a_tampered_link_keeps_what_is_sound_and_names_what_is_not():
    import base64
    import json
    import zlib
    data = MOONS.to_dict()
    data["layers"][1]["settings"]["hidden"] = 10_000
    data["training"]["learning_rate"] = "fast"
    link = base64.urlsafe_b64encode(zlib.compress(json.dumps(data).encode())).decode()
    page, problem = Explorer.from_link(link)
    assert "layers[1].settings.hidden" in problem and "training.learning_rate" in problem
    assert page.state.spec.target == MOONS.target and len(page.state.spec.layers) == 4
    assert page.state.spec.layers[1].settings["hidden"] == 64  # the default
    assert page.state.spec.training.batch_size == 256  # sound fields are kept
    page.close()


def test_the_layer_form_edits_one_layer(explorer):
    explorer.layer_editor.stack.act({"action": "select", "index": 1})
    hidden = explorer.layer_editor.form.widgets["hidden"]
    hidden.value = 32
    assert explorer.state.spec.layers[1].settings["hidden"] == 32
    assert explorer.state.spec.layers[0].settings["hidden"] == 64


def test_a_removed_layers_id_is_never_reused():
    stack = LayerStack()
    for _ in range(3):
        stack.act({"action": "add", "type": "planar"})
    stack.act({"action": "remove", "index": 2})
    stack.act({"action": "add", "type": "planar"})
    assert stack.ids() == [0, 1, 3]  # id 2 named the removed layer's weights


def test_the_compute_gate_runs_at_most_its_slots_first_come_first_served():
    gate, lock = ComputeGate(2), threading.Lock()
    running, peak, entered = [0], [0], []

    def job(i: int) -> None:
        with gate:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                entered.append(i)
            time.sleep(0.03)
            with lock:
                running[0] -= 1

    threads = []
    for i in range(8):
        threads.append(threading.Thread(target=job, args=(i,)))
        threads[-1].start()
        time.sleep(0.005)  # arrivals in order i
    for thread in threads:
        thread.join()
    assert peak[0] == 2
    assert entered == list(range(8))


def test_an_urgent_job_goes_ahead_of_every_waiting_one():
    gate, entered, hold = ComputeGate(1), [], threading.Event()

    def job(i: int, urgent: bool = False) -> None:
        with gate.urgent() if urgent else gate:
            entered.append(i)
            if i == 0:
                hold.wait(5)

    threads = [threading.Thread(target=job, args=(0,))]
    threads[0].start()
    time.sleep(0.05)  # job 0 holds the only slot
    for i in (1, 2, 3):
        threads.append(threading.Thread(target=job, args=(i,)))
        threads[-1].start()
        time.sleep(0.02)
    threads.append(threading.Thread(target=job, args=(9, True)))  # a click's frame, arriving last
    threads[-1].start()
    time.sleep(0.05)
    hold.set()
    for thread in threads:
        thread.join()
    assert entered == [0, 9, 1, 2, 3]


def test_while_the_gate_is_held_only_urgent_jobs_start_and_the_rest_follow_in_order():
    gate, entered = ComputeGate(1), []  # (one slot: with two, jobs 1 and 2 would start together, in either order)

    def job(i: int, urgent: bool = False) -> None:
        with gate.urgent() if urgent else gate:
            entered.append(i)

    threads = []
    with gate.held():  # a page being built
        for i in (1, 2, 3):
            threads.append(threading.Thread(target=job, args=(i,)))
            threads[-1].start()
            time.sleep(0.02)
        assert entered == []  # the slot is free, and still no step or frame starts
        threads.append(threading.Thread(target=job, args=(9, True)))  # a click's frame
        threads[-1].start()
        threads[-1].join(5)
        assert entered == [9]
    for thread in threads:
        thread.join(5)
    assert entered == [9, 1, 2, 3]


def test_a_thread_that_loops_on_the_gate_cannot_starve_a_waiting_one():
    gate, laps, seen_at = ComputeGate(1), [0], []

    def loop() -> None:
        for _ in range(50):
            with gate:
                laps[0] += 1
                time.sleep(0.002)

    def once() -> None:
        with gate:
            seen_at.append(laps[0])

    looper = threading.Thread(target=loop)
    looper.start()
    time.sleep(0.01)
    waiter = threading.Thread(target=once)
    waiter.start()
    looper.join(), waiter.join()
    assert seen_at and seen_at[0] < 15, seen_at  # its turn came after at most one more lap, not after all 50


def test_sessions_sharing_a_gate_both_train_and_render():
    gate = ComputeGate(1)
    spec = ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling", "settings": {"hidden": 8}}]})
    sessions = [LiveSession(spec, gate=gate) for _ in range(2)]
    try:
        for live in sessions:
            live.play()
        time.sleep(2)
        assert all(live.step > 5 and live.frames_rendered > 2 for live in sessions), [(l.step, l.frames_rendered) for l in sessions]
    finally:
        for live in sessions:
            live.close()


def test_a_log_scale_setting_shows_any_value_and_takes_a_new_one(explorer):
    slider = explorer.training.widgets["learning_rate"]
    assert slider.value == explorer.state.spec.training.learning_rate == 3e-3
    assert slider.options == sorted(slider.options) and {1e-6, 1e-3, 1e-2, 10.0} <= set(slider.options)
    slider.value = 1e-2
    assert explorer.state.spec.training.learning_rate == 1e-2
    explorer.state.load(MOONS.replace(training={"learning_rate": 7e-4}))
    assert slider.value == 7e-4 and 7e-4 in slider.options  # shown as it is, not rounded to a stop


def test_a_closed_session_is_not_playing(explorer):
    explorer.toolbar.play.value = True
    assert explorer.state.playing and explorer.state.live.playing
    explorer.close()
    assert not explorer.state.playing and not explorer.state.live.running


def test_hidden_panels_this_page_lacks_are_refused_or_dropped(explorer):
    import json

    data = MOONS.to_dict()
    data["presentation"]["hidden"] = ["ledger", "sidebar"]
    send_file(explorer.experiment.preset_upload, "p.json", json.dumps(data).encode())
    assert "'sidebar' is not a panel" in explorer.state.message and explorer.state.spec == MOONS
    page, problem = Explorer.from_link(spec_to_link(ExperimentSpec.from_dict(data)))
    assert "'sidebar' is not a panel" in problem and page.state.spec.presentation.hidden == ("ledger",)
    page.close()


def test_a_page_without_a_link_opens_the_served_preset_and_a_link_wins():
    explorer, problem = Explorer.from_link(None, preset="spline-8gaussians")
    try:
        assert problem == "" and {layer.type for layer in explorer.state.spec.layers} == {"spline_coupling"}
    finally:
        explorer.close()
    linked = ExperimentSpec.load(preset_path("planar-u1-k2"))
    explorer, problem = Explorer.from_link(spec_to_link(linked), preset="spline-8gaussians")
    try:
        assert explorer.state.spec.title == linked.title
    finally:
        explorer.close()


def test_a_server_session_renders_on_its_rendering_thread_coarse_then_exact():
    """In a server session the event loop (shared by every page) runs no torch for a click: Step
    leaves the shown frame alone, and the rendering thread publishes a preview, then the exact frame."""
    spec = ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling", "settings": {"hidden": 8}}],
                                     "view": {"resolution": 64}})
    state = ExperimentState(spec, exact_in_background=True)
    try:
        assert state.frame.kind == "preview"  # a new page is never blank
        assert wait_for(lambda: state.tick() and state.frame.kind == "exact")
        shown = state.frame
        published = []
        state.live.on_publish = lambda: published.append(state.live.take_frame())  # as the explorer's wake-up would
        state.step()
        assert state.frame is shown  # nothing computed on the caller's thread
        assert wait_for(lambda: len(published) == 2)
        assert [(f.kind, f.step) for f in published] == [("preview", 1), ("exact", 1)]
    finally:
        state.close()



def test_a_served_page_is_built_without_the_strips_below_the_fold():
    """Its first view comes sooner; the ln|det J| and sample strips join once the page has loaded
    (tests/test_browser.py's pages wait for that, and check every panel is there)."""
    from bokeh.document import Document

    explorer = Explorer(ExperimentSpec.load(preset_path("realnvp-moons")), served=True)
    try:
        doc = Document()
        doc.add_root(pn.panel(explorer).get_root(doc))
        strips = explorer.strips
        assert not explorer.page_loaded
        assert doc.get_model_by_id(strips.density.figure.id) is strips.density.figure
        assert [doc.get_model_by_id(strip.figure.id) for strip in (strips.log_det, strips.samples)] == [None, None]
    finally:
        explorer.close()
    notebook = Explorer(ExperimentSpec.load(preset_path("realnvp-moons")))  # no page load to wait for
    try:
        doc = Document()
        doc.add_root(pn.panel(notebook).get_root(doc))
        assert doc.get_model_by_id(notebook.strips.samples.figure.id) is notebook.strips.samples.figure
    finally:
        notebook.close()


def test_sessions_on_one_target_share_its_read_only_picture():
    spec = ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling", "settings": {"hidden": 8}}],
                                     "target": {"name": "moons"}, "view": {"resolution": 32}})
    first, second = LiveSession(spec), LiveSession(spec)
    other = LiveSession(spec.replace(view={"resolution": 48}))
    try:
        assert first.target_picture is second.target_picture  # computed once
        assert other.target_picture.density.shape == (48, 48)
        with pytest.raises(ValueError):
            first.target_picture.density[0, 0] = 1.0  # no session can change another's picture
    finally:
        for live in (first, second, other):
            live.close()


# -- hand mode ---------------------------------------------------------------------------------------
def test_the_hand_panel_joins_the_page_only_when_a_layer_is_taken_in_hand(explorer):
    """Until then its Bokeh models stay out of the document that every frame's message is checked against."""
    from bokeh.document import Document

    doc = Document()
    doc.add_root(pn.panel(explorer).get_root(doc))
    state, hand = explorer.state, explorer.hand
    assert doc.get_model_by_id(hand.fig.id) is None
    explorer.layer_editor.stack.act({"action": "add", "type": "radial", "index": 0})
    state.hold(state.layer_ids[0])
    assert doc.get_model_by_id(hand.fig.id) is hand.fig and hand.panel.visible
    state.hold(None)
    assert not hand.panel.visible


def test_hand_mode_moves_a_layer_every_view_follows_and_undo_and_done_put_it_back(explorer):
    state, hand = explorer.state, explorer.hand
    explorer.layer_editor.stack.act({"action": "add", "type": "radial", "index": 0})
    radial = state.layer_ids[0]
    explorer.layer_editor.stack.selected = radial
    by_hand = [w for w in explorer.layer_editor.form_holder.objects if isinstance(w, pn.widgets.Button)]
    assert [b.label for b in by_hand] == ["Move it by hand"]
    by_hand[0].clicks += 1
    assert state.spec.presentation.hand == 1 and hand.panel.visible and not state.playing
    trained = state.live.handles(radial)
    density = np.array(explorer.strips.density.images.data["density"][1])
    centre = trained["center"]
    assert hand.grab(centre[0] + 0.05, centre[1]).name == "center"
    hand.drag(centre[0] + 1.05, centre[1] - 0.5)
    hand.let_go()
    assert state.live.handles(radial)["center"] == pytest.approx((centre[0] + 1.0, centre[1] - 0.5), abs=1e-6)
    assert state.frame.kind == "exact" and np.abs(explorer.strips.density.images.data["density"][1] - density).max() > 1e-4
    assert hand.points.data["x"][0] == pytest.approx(centre[0] + 1.0, abs=1e-6)
    hand._widgets["beta"].value = -0.2  # a slider moves a number
    assert state.live.handles(radial)["beta"] == pytest.approx(-0.2, abs=1e-6)
    state.step()  # training goes on from what the hand set
    assert state.live.step == 1 and state.live.handles(radial)["center"] != pytest.approx(centre, abs=1e-3)
    assert state.undo_hand()
    for name, value in trained.items():
        assert state.live.handles(radial)[name] == pytest.approx(value, abs=1e-6)
    hand.done.clicks += 1
    assert state.spec.presentation.hand == -1 and not hand.panel.visible


def test_hand_mode_follows_its_layer_through_stack_edits_and_ends_with_it(explorer):
    state = explorer.state
    explorer.layer_editor.stack.act({"action": "add", "type": "planar", "index": 0})
    planar = state.layer_ids[0]
    state.hold(planar)
    explorer.layer_editor.stack.act({"action": "add", "type": "affine_coupling", "index": 0})
    assert state.held_part() == planar and state.spec.presentation.hand == 2
    explorer.layer_editor.stack.act({"action": "remove", "index": 1})
    assert state.spec.presentation.hand == -1 and not explorer.hand.panel.visible


def test_a_move_the_layer_cannot_take_is_refused_and_the_layer_kept(explorer):
    state = explorer.state
    explorer.layer_editor.stack.act({"action": "add", "type": "lu_linear", "index": 0})
    state.hold(state.layer_ids[0])
    before = state.live.handles(state.layer_ids[0])
    assert not state.move_hand({"w11": 1.0, "w12": 1.0, "w21": 1.0, "w22": 1.0}, final=True)
    assert "singular" in state.message and state.live.handles(state.layer_ids[0]) == before


def test_a_hand_mode_preset_opens_paused_with_its_layer_in_hand():
    page = Explorer(ExperimentSpec.load(preset_path("hand-planar")))
    try:
        assert page.hand.panel.visible and page.layer_editor.stack.selected == page.state.layer_ids[0]
        assert page.hand.points.data["label"] == ["", "w", "u"] and len(page.hand.lines.data["x0"]) == 1
        assert page.hand.line_label.data["text"] == ["w·z + b = 0"]  # (on the line, not on its handle)
        wide = page.state.spec.to_dict()
        wide["view"].update(xmin=-6.0, xmax=6.0)
        page.state.load(ExperimentSpec.from_dict(wide))
        assert (page.hand.fig.x_range.start, page.hand.fig.x_range.end) == (-6.0, 6.0)
        assert "KL(q_1‖p) after this layer" in page.hand.score.object
    finally:
        page.close()


def test_a_learned_base_moves_by_hand_from_the_base_card():
    page = Explorer(ExperimentSpec.from_dict({"base": {"name": "diagonal_normal", "learnable": True},
                                              "layers": [{"type": "affine_coupling"}], "view": {"resolution": 24}}))
    try:
        state, hand = page.state, page.hand
        assert page.base.by_hand.visible
        page.base.by_hand.clicks += 1
        assert state.held_part() == "base" and hand.panel.visible and "The base by hand" in hand.title.object
        before = np.array(page.strips.density.images.data["density"][0])
        assert hand.grab(0.02, 0.0).name == "loc"
        hand.drag(1.02, 0.5)
        hand.let_go()
        assert state.live.handles("base")["loc"] == pytest.approx((1.0, 0.5), abs=1e-6)
        assert np.abs(np.array(page.strips.density.images.data["density"][0]) - before).max() > 1e-3
        assert "of the base" in hand.score.object
        state.set_base(learnable=False)  # a fixed base is what its settings say: hand mode ends
        assert state.held_part() is None and not hand.panel.visible and not page.base.by_hand.visible
    finally:
        page.close()


def test_a_frame_answer_reaches_the_clock_without_marking_the_server_busy():
    """The page answers every frame; Panel's busy flag (and its watchers) must not flip for it."""
    from bokeh.document import Document
    from panel.models.esm import DataEvent

    from flowviz.ui.pickers import FrameClock

    clock, doc = FrameClock(), Document()
    model = clock.get_root(doc)
    doc.add_root(model)  # subscribes the model to the page's events
    answered, busy = [], []
    clock.on_painted = lambda: answered.append(clock.painted)
    watcher = pn.state.param.watch(lambda event: busy.append(event.new), "busy")
    try:
        clock.sent()
        doc.callbacks.trigger_event(DataEvent(model=model, data={"painted": 1}))
    finally:
        pn.state.param.unwatch(watcher)
    assert answered == [1] and busy == []


def test_the_status_line_sends_each_new_text_once_and_again_to_a_page_that_draws_it_later():
    """Frames repeat the same status often (paused, slow motion): only a change travels. A page or a
    notebook cell that draws the line after its text was sent asks for it and gets it."""
    from bokeh.document import Document
    from panel.models.esm import DataEvent

    from flowviz.ui.pickers import StatusLine

    line, doc = StatusLine(), Document()
    model = line.get_root(doc)
    doc.add_root(model)
    sent = []
    doc.on_change(lambda event: sent.append(event.msg_data.data["html"]))
    for html in ("step 1", "step 1", "step 2"):
        line.show(html)
    doc.callbacks.trigger_event(DataEvent(model=model, data="rendered"))
    assert sent == ["step 1", "step 2", "step 2"] and line.html == "step 2"


def test_a_page_answers_every_second_frame_and_has_at_most_three_on_their_way():
    """The next frame travels while the page paints the last, but a page that paints slowly gets no
    more than three: frames do not queue in its socket. It answers every second frame (each answer
    costs the shared event loop), and an answer frees every frame up to it, however batched."""
    from bokeh.document import Document
    from panel.models.esm import DataEvent

    from flowviz.ui.pickers import FrameClock

    clock, doc = FrameClock(), Document()
    model = clock.get_root(doc)
    doc.add_root(model)
    asked = []
    doc.on_change(lambda event: asked.append(event.msg_data.data["answer"]))
    readiness = []
    for _ in range(3):
        readiness.append(clock.ready(3))
        clock.sent(every_frame=False)
    assert readiness == [True, True, True] and not clock.ready(3)
    assert asked == [False, True, False]  # frames 1, 2, 3: the page answers the second
    doc.callbacks.trigger_event(DataEvent(model=model, data={"painted": 2}))
    assert clock.painted == 2 and clock.answers == 1 and clock.ready(3)
    clock.sent(every_frame=False)
    clock.sent(every_frame=False)
    assert not clock.ready(3) and asked[3:] == [True, False]
    doc.callbacks.trigger_event(DataEvent(model=model, data={"painted": 5}))  # the page caught up at once
    assert clock.painted == 5 and clock.ready(1) and clock.answer_seconds > 0
    clock.sent(every_frame=False)  # frame 6, which the page answers
    doc.callbacks.trigger_event(DataEvent(model=model, data={"painted": 6}))
    clock.sent(every_frame=False)  # frame 7, which it does not: it does not hold back the next one
    assert clock.ready(1)
    for frame in (8, 9):  # one at a time (a server over its budget): every frame is answered
        clock.sent(every_frame=True)
        assert asked[-1] is True and not clock.ready(1)
        doc.callbacks.trigger_event(DataEvent(model=model, data={"painted": frame}))
    assert clock.painted == 9 and clock.answers == 5


def test_the_live_kl_after_each_layer_waits_frames_as_well_as_seconds(monkeypatch):
    """A slow page (a class's 1-2 frames/s) must not pay for a new estimate with nearly every frame:
    with the time bar at zero, a new one still comes only every FIT_EVERY_FRAMES live frames."""
    monkeypatch.setattr(live_module, "FIT_EVERY", 0.0)
    live = LiveSession(MOONS)
    live.steps_per_frame = 1  # every frame shows new weights, so every new estimate differs
    live.play()
    frames = _live_frames(live, 9)
    live.close()
    assert len(frames) == 9 and len({frame.step for frame in frames}) >= 5
    estimates = [tuple(frame.kl_by_depth) for frame in frames]
    changes = sum(a != b for a, b in itertools.pairwise(estimates))
    assert 1 <= changes <= 3  # 9 frames, FIT_EVERY_FRAMES = 4: a new estimate at most every 4th


def test_a_server_over_its_budget_sends_one_frame_at_a_time(explorer, monkeypatch):
    """Three frames on their way only while live frames are drawn at full size; a class that makes
    them coarser gets one at a time, each answered, so a Pause's effect is not queued behind more."""
    clock, live = explorer.clock, explorer.state.live
    live.render()
    explorer.tick()
    assert clock.shown - clock.painted == 1  # frame 1, which the page is not asked to answer
    monkeypatch.setattr(live, "over_budget", lambda: True)
    live.render()
    explorer.tick()
    assert clock.shown - clock.painted == 2  # frame 2 asks: frame 1 alone would never be answered
    live.render()
    explorer.tick()
    assert clock.shown - clock.painted == 2  # frame 3 waits for the page's answer to frame 2
    monkeypatch.setattr(live, "over_budget", lambda: False)
    explorer.tick()
    assert clock.shown - clock.painted == 3


def test_a_message_is_the_same_with_model_references_made_by_need(monkeypatch):
    """`messages_refer_to_models_by_need` changes how Bokeh's serialiser finds a model's reference,
    not the message: a change that refers to models the page has and to a new one encodes alike."""
    from bokeh.core.serialization import Deserializer, Serializer
    from bokeh.document import Document
    from bokeh.models import ColumnDataSource, Title
    from bokeh.plotting import figure

    from flowviz.ui.serving import messages_refer_to_models_by_need

    messages_refer_to_models_by_need()
    document, source = Document(), ColumnDataSource({"x": [1.0], "y": [2.0]})
    plot = figure()
    plot.scatter("x", "y", source=source)
    document.add_root(plot)
    document.models.flush_synced()  # the page has every model now
    events = []
    document.on_change(events.append)
    source.data = {"x": np.arange(3.0), "y": np.ones(3)}
    plot.title = Title(text="new")  # a model the page does not have yet
    plot.x_range = plot.y_range  # a model it has: a reference only

    def encoded():  # buffers inline (base64), so two encodings compare as text
        return Serializer(references=document.models.synced_references, deferred=False).encode(events)

    def decoded(message):  # as a page's message is read: against every model of the document
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "reference already known")  # the Title, a model the document has
            return repr(Deserializer(list(document.models)).decode(message))

    by_need = encoded()
    read_by_need = decoded(by_need)
    monkeypatch.setattr(Serializer, "__init__", Serializer.__init__.__wrapped__)
    monkeypatch.setattr(Deserializer, "__init__", Deserializer.__init__.__wrapped__)
    assert repr(by_need) == repr(encoded())
    assert "'name': 'Title'" in repr(by_need) and f"'new': {{'id': '{plot.y_range.id}'}}" in repr(by_need)
    assert read_by_need == decoded(by_need)
    assert f"'new': DataRange1d(id='{plot.y_range.id}'" in read_by_need and "'new': Title(id=" in read_by_need


def test_a_message_goes_out_in_one_write_as_the_same_bytes_panel_writes_frame_by_frame():
    """`messages_in_one_write` joins the websocket frames Panel writes one by one (3 + 2 per binary
    buffer) into one socket write: the bytes on the wire, and their order, are Panel's."""
    import asyncio
    from types import SimpleNamespace

    import panel.io.document
    from bokeh.document import Document
    from bokeh.document.events import ModelChangedEvent
    from bokeh.models import ColumnDataSource
    from bokeh.protocol import Protocol
    from tornado.concurrent import Future
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError, WebSocketProtocol13

    from flowviz.ui.serving import messages_in_one_write

    messages_in_one_write()
    document, source = Document(), ColumnDataSource({"x": np.arange(3.0)})
    document.add_root(source)
    change = ModelChangedEvent(document, source, "data", {"x": np.arange(5.0), "colour": np.arange(4, dtype=np.uint8)})
    message = Protocol().create("PATCH-DOC", [change])
    assert len(message._buffers) == 2

    class Stream:  # a socket's stream: records each write
        def __init__(self, closed=False):
            self.writes, self.is_closed = [], closed

        def write(self, data):
            self.writes.append(bytes(data))
            done = Future()
            if self.is_closed:
                done.set_exception(StreamClosedError())
            else:
                done.set_result(None)
            return done

        def closed(self):
            return False

    def connection(stream):  # a server's websocket connection, as tornado makes it, on `stream`
        protocol = WebSocketProtocol13.__new__(WebSocketProtocol13)
        protocol.stream, protocol.mask_outgoing, protocol._compressor = stream, False, None
        protocol.client_terminated = protocol.server_terminated = False
        protocol._message_bytes_out = protocol._wire_bytes_out = 0
        return SimpleNamespace(_socket=SimpleNamespace(ws_connection=protocol))

    async def send(dispatch, stream):
        for written in dispatch(connection(stream), msg=message):
            await written

    one_by_one, joined = Stream(), Stream()
    asyncio.run(send(panel.io.document.dispatch_tornado.__wrapped__, one_by_one))
    asyncio.run(send(panel.io.document.dispatch_tornado, joined))
    assert len(one_by_one.writes) == 7 and len(joined.writes) == 1
    assert joined.writes[0] == b"".join(one_by_one.writes)
    # A page that closed meanwhile: what Panel expects from a write to it (it logs and goes on)
    with pytest.raises(WebSocketClosedError):
        asyncio.run(send(panel.io.document.dispatch_tornado, Stream(closed=True)))


def test_the_device_picker_says_what_a_gpu_speeds_up_where_there_is_one(monkeypatch):
    state = ExperimentState(ExperimentSpec.from_dict({"layers": [{"type": "planar"}], "view": {"resolution": 16}}))
    try:
        monkeypatch.setattr(cards, "available_devices", lambda: ["cpu"])
        assert cards.TrainingCard(state).device.description is None  # nothing to choose: nothing to say
        monkeypatch.setattr(cards, "available_devices", lambda: ["cpu", "cuda:0"])
        picker = cards.TrainingCard(state).device
        assert picker.options == ["cpu", "cuda:0"] and "one CUDA graph" in picker.description
    finally:
        state.close()
