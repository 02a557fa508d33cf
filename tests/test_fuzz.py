"""Bad input, fuzzed: preset files and uploads never raise anything but their own error, and in the
page they never change the experiment or the trained model."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec
from flowviz.ui.explorer import Explorer

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(["seed", "base", "layers", "target", "training", "view", "version", "title", "name",
                        "settings", "type", "enabled", "points", "learnable", "bins", "objective"])
SPEC_LIKE = st.recursive(
    JSON, lambda children: st.dictionaries(KEYS, children, max_size=5) | st.lists(children, max_size=3), max_leaves=25)


@given(st.binary(max_size=300))
def test_random_bytes_as_a_preset(data):
    try:
        ExperimentSpec.from_json(data)
    except SpecError:
        pass


@given(SPEC_LIKE)
def test_random_json_shaped_like_a_preset(value):
    try:
        spec = ExperimentSpec.from_dict(value)
    except SpecError as error:
        assert error.field  # the message names where
    else:
        assert ExperimentSpec.from_json(spec.to_json()) == spec


def test_deep_and_huge_presets_are_refused_cleanly():
    for text in ("[" * 100_000 + "]" * 100_000, '{"title": "' + "x" * (9 * 1024 * 1024) + '"}',
                 '{"layers": [' + ",".join(['{"type": "swap"}'] * 33) + "]}", "\ufeff{}", "NaN", '{"seed": 1e999}'):
        with pytest.raises(SpecError):
            ExperimentSpec.from_json(text)


# -- in the page: nothing changes -------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    page = Explorer(ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling"}, {"type": "planar"}],
                                              "view": {"resolution": 24}}))
    for _ in range(5):
        page.state.step()
    yield page
    page.close()


def send_file(upload, name: str, data: bytes) -> None:
    """What the browser side of FileUpload sends for a chosen file."""
    upload._handle_msg({"name": name, "data": base64.b64encode(data).decode()})


def _state(page):
    page.state.say("")
    return page.state.spec, {k: v.clone() for k, v in page.state.live.flow.state_dict().items()}, page.state.live.step


def _unchanged(page, before):
    spec, weights, step = before
    assert page.state.spec == spec and page.state.live.step == step
    for key, value in page.state.live.flow.state_dict().items():
        assert torch.equal(value, weights[key])


FILE_NAMES = st.sampled_from(["p.csv", "p.tsv", "p.txt", "p.npy", "p.json", "p", "p.xlsx", "p.png", "p.jpg"])


@settings(max_examples=60)
@given(st.binary(max_size=400), FILE_NAMES)
def test_random_uploads_leave_the_experiment_alone(trained, data, name):
    before = _state(trained)
    send_file(trained.target.upload, name, data)
    if trained.state.spec.target.name == "points":  # the bytes happened to be valid points: undo for the next case
        trained.state.load(before[0])
        for _ in range(before[2]):
            trained.state.step()
        return
    assert trained.state.message
    _unchanged(trained, before)


@settings(max_examples=40)
@given(SPEC_LIKE)
def test_random_preset_files_leave_the_experiment_alone(trained, value):
    before = _state(trained)
    text = json.dumps(value, allow_nan=True).encode()
    try:
        ExperimentSpec.from_json(text)
        return  # a valid experiment would (rightly) load
    except SpecError:
        pass
    send_file(trained.experiment.preset_upload, "p.json", text)
    assert "not loaded" in trained.state.message
    _unchanged(trained, before)


def _picture_bytes(kind: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.new("L", (24, 16), 255)
    image.paste(0, (4, 4, 12, 12))
    image.save(buffer, format=kind)
    return buffer.getvalue()


PICTURES = [_picture_bytes("PNG"), _picture_bytes("JPEG")]


@settings(max_examples=60)
@given(st.sampled_from(PICTURES), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(8, 400))
def test_damaged_pictures_leave_the_experiment_alone_or_become_the_target(trained, picture, flips, keep):
    """A real PNG or JPEG with bytes changed and its tail cut: refused with a message, or (if it still
    decodes) the target; never an exception, never a changed model on refusal."""
    data = bytearray(picture[:keep])
    for where, value in flips:
        data[where % len(data)] = value
    before = _state(trained)
    send_file(trained.target.upload, "p.png", bytes(data))
    if trained.state.spec.target.name == "image":
        trained.state.load(before[0])
        for _ in range(before[2]):
            trained.state.step()
        return
    assert "unchanged" in trained.state.message
    _unchanged(trained, before)


@pytest.mark.parametrize("data", [
    np.array([[1.0, 2.0], [3.0, np.nan]]).tobytes(),
    b"\x93NUMPY" + bytes(200),
    "x;y\n1,5;2\n".encode("utf-16"),
    b"\xef\xbb\xbf",
    b"1,2,3\n4,5,6\n",
    b"1e400,2\n3,4\n",
])
def test_named_bad_uploads_leave_the_experiment_alone(trained, data):
    before = _state(trained)
    send_file(trained.target.upload, "bad.npy" if data.startswith(b"\x93") else "bad.csv", data)
    assert "bad." in trained.state.message and "unchanged" in trained.state.message
    _unchanged(trained, before)


# -- training faults: pause, restore, say which layer and what to do ---------------------------------
def _play_until_error(page, timeout=20.0):
    import time

    page.toolbar.play.value = True
    deadline = time.time() + timeout
    while time.time() < deadline and page.state.live.error is None:
        time.sleep(0.02)
    time.sleep(0.1)
    page.tick()  # what the periodic callback does on the server


def test_a_layer_driven_to_nan_pauses_restores_and_names_it():
    page = Explorer(ExperimentSpec.from_dict({
        "target": {"name": "moons"}, "view": {"resolution": 16},
        "layers": [{"type": "affine_coupling"}, {"type": "planar"}, {"type": "affine_coupling"}]}))
    for _ in range(3):
        page.state.step()
    planar = page.state.live.flow.layers[1]
    calls = {"n": 0}
    original = planar.inverse

    def poisoned(x):  # finite for a few more calls, then NaN: as if training had driven it there
        calls["n"] += 1
        points, ladj = original(x)
        return (points * float("nan"), ladj) if calls["n"] > 20 else (points, ladj)

    planar.inverse = poisoned
    finite_weights = None
    _play_until_error(page)
    assert not page.state.live.playing and not page.toolbar.play.value
    assert "layer 2 (Planar flow)" in page.state.message and "learning rate" in page.state.message
    finite_weights = {k: v for k, v in page.state.live.flow.state_dict().items()}
    assert all(torch.isfinite(v).all() for v in finite_weights.values() if v.is_floating_point())
    planar.inverse = original
    page.state.step()  # it trains on from the restored model
    assert page.state.live.error is None and np.isfinite(page.state.live.losses[-1])
    page.close()


def test_a_degenerate_base_pauses_and_names_the_base():
    # A uniform base on [-1, 1]² cannot explain points outside it: ln q = -inf at once.
    page = Explorer(ExperimentSpec.from_dict({"base": {"name": "uniform"}, "target": {"name": "moons"},
                                              "view": {"resolution": 16}}))
    page.state.step()
    assert "the base distribution" in page.state.message and "restored" in page.state.message
    assert page.state.live.step == 0
    page.close()


def test_a_learning_rate_of_ten_never_leaves_a_non_finite_model():
    page = Explorer(ExperimentSpec.from_dict({
        "target": {"name": "checkerboard"}, "view": {"resolution": 16}, "training": {"learning_rate": 10.0},
        "layers": [{"type": "affine_coupling", "settings": {"transformed": t, "hidden": 16}} for t in ("z2", "z1") * 2]}))
    for _ in range(150):
        page.state.step()
        if page.state.live.error:
            assert "Try a smaller learning rate (now 10)" in page.state.message
            break
    for value in page.state.live.flow.state_dict().values():
        if value.is_floating_point():
            assert torch.isfinite(value).all()
    page.close()


# -- limits that protect a shared server -------------------------------------------------------------
def test_a_full_server_serves_a_notice_and_no_model(monkeypatch):
    from flowviz import app

    monkeypatch.setattr(app, "open_sessions", lambda: app.LIMITS.max_sessions + 1)
    page = app.create_app()
    assert not hasattr(page, "explorer")
    assert "server is full" in page.main[0].object


def test_settings_past_the_limits_are_refused_in_the_page(trained):
    before = _state(trained)
    trained.layer_editor.stack.act({"action": "select", "index": 0})
    hidden = trained.layer_editor.form.widgets["hidden"]
    hidden.value = 100_000
    assert "hidden" in trained.state.message and "256" in trained.state.message
    _unchanged(trained, before)
    for _ in range(40):
        trained.layer_editor.stack.act({"action": "add", "type": "swap"})
    assert len(trained.state.spec.layers) == 32 and "at most 32" in trained.state.message
    trained.state.load(before[0])


def test_a_page_closing_mid_frame_is_not_logged_as_an_error_but_other_failures_are():
    """A class closing its tabs at once leaves frame writes to closed sockets, never awaited: asyncio
    would log each as an error with two tracebacks. Those alone are quiet; anything else still is not."""
    import asyncio
    import logging

    from tornado.websocket import WebSocketClosedError

    from flowviz.ui.serving import closed_page_writes_are_not_errors

    class Records(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.errors = []

        def emit(self, record):
            if record.levelno >= logging.WARNING:
                self.errors.append(record.getMessage())

    records, root = Records(), logging.getLogger()
    root.addHandler(records)
    loop = asyncio.new_event_loop()
    try:
        closed_page_writes_are_not_errors(loop)
        closed_page_writes_are_not_errors(loop)  # once per process, however many sessions ask
        loop.call_exception_handler({"message": "Task exception was never retrieved",
                                     "exception": WebSocketClosedError()})
        assert records.errors == []
        loop.call_exception_handler({"message": "Task exception was never retrieved",
                                     "exception": RuntimeError("a real fault")})
        assert any("never retrieved" in message for message in records.errors)
    finally:
        loop.close()
        root.removeHandler(records)
