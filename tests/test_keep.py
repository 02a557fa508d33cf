"""Kept sessions: a training state that goes to the browser and comes back carries on bit for bit; a
damaged, foreign or malicious one is refused with its reason, never unpickled, and changes nothing."""

import base64
import io
import os
import pickle
import threading
import time
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowviz.core.checkpoint import MAX_SESSION_BYTES, experiment_key, read_session, session_bytes
from flowviz.core.presets import preset_path
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer
from flowviz.ui.keep import KEEP_EVERY, KeepView
from flowviz.ui.state import ExperimentState

SPEC = ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling"}, {"type": "actnorm"}, {"type": "planar"}],
                                 "training": {"eval_every": 10, "batch_size": 64}, "view": {"resolution": 24}})


def _train(trainer, steps):
    """Steps as the page takes them: an evaluation every `eval_every`."""
    for _ in range(steps):
        trainer.step()
        if trainer.step_count % trainer.settings.eval_every == 0:
            trainer.evaluate()
    return trainer


@pytest.mark.parametrize("preset", ["realnvp-moons", "spline-smiley", "planar-u1-k8", "cnf-fm-moons", "maf-u3"])
def test_a_restored_trainer_carries_on_exactly_as_one_that_never_stopped(preset):
    """Train 25 steps, keep, restore into a new trainer, train 15 more: the same losses, evaluations
    and weights as 40 steps in one go (weights, Adam's moments and the batch stream all came back)."""
    spec = ExperimentSpec.load(preset_path(preset)).replace(
        training={**ExperimentSpec.load(preset_path(preset)).to_dict()["training"], "eval_every": 10, "batch_size": 64})
    straight = _train(Trainer(spec), 40)
    first = _train(Trainer(spec), 25)
    again = Trainer(spec)
    again.load_training_state(read_session(session_bytes(first), spec))
    assert (again.step_count, again.losses, again.evaluations) == (25, first.losses, first.evaluations)
    _train(again, 15)
    assert again.losses == straight.losses
    assert [e.test_nll for e in again.evaluations] == [e.test_nll for e in straight.evaluations]
    for (key, mine), theirs in zip(again.flow.state_dict().items(), straight.flow.state_dict().values()):
        assert torch.equal(mine, theirs), key


def test_the_key_ignores_the_presentation_and_nothing_else():
    assert experiment_key(SPEC) == experiment_key(SPEC.replace(presentation={"projector": True, "hidden": ["samples"]}))
    for changed in (SPEC.replace(seed=3), SPEC.replace(training={**SPEC.to_dict()["training"], "learning_rate": 0.01}),
                    SPEC.replace(layers=SPEC.to_dict()["layers"][:2])):
        assert experiment_key(changed) != experiment_key(SPEC)


@pytest.fixture(scope="module")
def kept():
    return session_bytes(_train(Trainer(SPEC), 12))


def _resave(content, change):
    data = torch.load(io.BytesIO(content), weights_only=True)
    change(data)
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def _nan_weight(data):
    name = next(k for k, v in data["state"]["flow"].items() if v.is_floating_point())
    data["state"]["flow"][name] = data["state"]["flow"][name] * float("nan")


def _shrunk_weight(data):
    name = next(k for k, v in data["state"]["flow"].items() if v.dim() > 1)
    data["state"]["flow"][name] = data["state"]["flow"][name][:1]


def _other_layers(data):
    data["state"]["flow"] = {f"x{k}": v for k, v in data["state"]["flow"].items()}


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d.update(key="0" * 32), "another experiment"),
    (lambda d: d.update(spec=SPEC.replace(seed=9).to_json()), "another experiment"),
    (lambda d: d.update(format="flowviz-model"), "not a flowviz session"),
    (lambda d: d.update(version=99), "format version 99"),
    (_nan_weight, "non-finite"),
    (_shrunk_weight, "another model"),
    (_other_layers, "another model"),
    (lambda d: d["state"].update(step=torch.tensor(-4)), "step count"),
    (lambda d: d["state"].update(losses=d["state"]["losses"][:3]), "one loss per step"),
    (lambda d: d["state"].update(adam=d["state"]["adam"][:1]), "Adam"),
    (lambda d: d["state"]["adam"][0].update(exp_avg=torch.zeros(7, 7)), "Adam's exp_avg"),
    (lambda d: d["state"]["adam"][0].update(exp_avg=d["state"]["adam"][0]["exp_avg"].double()), "Adam's exp_avg"),
    (lambda d: d["state"]["adam"][0].update(step=torch.tensor(-3.0)), "Adam's step"),
    (lambda d: d["state"]["adam"][0].update(extra=torch.zeros(1)), "unknown entries"),
    (lambda d: d["state"]["adam"][0].pop("exp_avg_sq"), "incomplete"),
    (lambda d: d["state"].update(generator=torch.zeros(3, dtype=torch.uint8)), "random stream"),
    (lambda d: d["state"].update(evaluations=torch.zeros(2)), "evaluations"),
])
def test_a_tampered_state_is_refused_with_its_reason_and_changes_nothing(kept, change, reason):
    state = ExperimentState(SPEC)
    state.step()
    before = ({k: v.clone() for k, v in state.live.flow.state_dict().items()}, list(state.live.losses))
    assert not state.restore(_resave(kept, change))
    assert reason in state.message and "Nothing changed" in state.message
    assert state.live.step == 1 and state.live.losses == before[1]
    for key, value in state.live.flow.state_dict().items():
        assert torch.equal(value, before[0][key])
    state.close()


def test_a_spline_state_kept_before_the_spline_changed_direction_is_refused_and_others_are_not():
    spline = ExperimentSpec.from_dict({"layers": [{"type": "spline_coupling", "settings": {"hidden": 8}}]})
    for spec, usable in ((SPEC, True), (spline, False)):
        old = _resave(session_bytes(_train(Trainer(spec), 3)), lambda d: d.update(version=1))
        state = ExperimentState(spec)
        try:
            assert state.restore(old) is usable
            assert usable or "spline coupling ran its spline the other way" in state.message
        finally:
            state.close()


class Payload:
    """What a malicious pickle would run on load: it must never run."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/flowviz-pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, about the plain pickle below
def test_a_malicious_pickle_is_never_run():
    marker = "/tmp/flowviz-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    buffer = io.BytesIO()
    torch.save({"format": "flowviz-session", "version": 1, "state": Payload()}, buffer)
    with pytest.raises(ValueError, match="loads safely"):
        read_session(buffer.getvalue(), SPEC)
    with pytest.raises(ValueError, match="loads safely"):
        read_session(pickle.dumps(Payload()), SPEC)
    assert not os.path.exists(marker)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=8))
def test_damaged_kept_bytes_are_refused_or_restore_a_valid_model(kept, flips):
    """Random byte flips in a kept state: read_session and the trainer either refuse with a
    ValueError or (a flip in unused bytes) restore a model with finite weights; nothing else escapes."""
    data = bytearray(kept)
    for where, value in flips:
        data[where % len(data)] = value
    trainer = Trainer(SPEC)
    try:
        trainer.load_training_state(read_session(bytes(data), SPEC))
    except ValueError:
        return
    assert all(torch.isfinite(v).all() for v in trainer.flow.state_dict().values() if v.is_floating_point())


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_are_refused(data):
    with pytest.raises(ValueError):
        read_session(data, SPEC)


def test_a_state_past_the_size_limit_is_refused_before_it_is_opened():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.pkl", b"\0" * (20 * 2**20))
    with pytest.raises(ValueError, match="MiB a kept session may have"):
        read_session(buffer.getvalue() + b"\0" * (MAX_SESSION_BYTES + 1), SPEC)


def test_a_model_too_large_to_keep_says_so_once_and_trains_on(monkeypatch):
    monkeypatch.setattr("flowviz.ui.keep.MAX_SESSION_BYTES", 1000)
    state = ExperimentState(SPEC)
    keeper = KeepView(state)
    sent = Sent(keeper)
    state.live.step_once()
    assert not keeper.keep(force=True) and sent.kept == []
    assert "too large to keep" in state.message and "Download the trained model" in state.message
    state.say("")
    state.live.step_once()
    keeper.keep(force=True)
    assert state.message == ""  # said once a page
    state.close()


# -- in the page: keeping and offering ------------------------------------------------------------
class Sent:
    """Stands in for the page's storage: records what the view sends it; `answer` is a message from
    the page (as Panel's own tests feed a component what its browser side sends)."""

    def __init__(self, keeper):
        self.kept, self.fetched = [], []
        keeper.store.keep = lambda content, steps, title: self.kept.append((content, steps))
        keeper.store.fetch = self.fetched.append
        self.answer = keeper.store._handle_msg


def test_the_view_keeps_while_training_at_most_every_few_seconds_and_at_each_pause(monkeypatch):
    state = ExperimentState(SPEC)
    keeper = KeepView(state)
    sent = Sent(keeper)
    assert not keeper.keep(force=True)  # nothing trained: nothing to keep (an old state stays on offer)
    clock = [1000.0]
    monkeypatch.setattr("flowviz.ui.keep.time.monotonic", lambda: clock[0])
    state.live.step_once()
    assert keeper.keep() and sent.kept[-1][1] == 1
    state.live.step_once()
    clock[0] += KEEP_EVERY / 2
    assert not keeper.keep()  # too soon
    clock[0] += KEEP_EVERY / 2
    assert keeper.keep() and sent.kept[-1][1] == 2
    assert not keeper.keep(force=True)  # nothing new since
    state.playing = True
    deadline = time.time() + 30
    while state.live.step < 5 and time.time() < deadline:
        time.sleep(0.01)
    state.playing = False
    kept = len(sent.kept)
    assert keeper.keep() and len(sent.kept) == kept + 1  # the next tick after a pause keeps, however soon
    assert sent.kept[-1][1] == state.live.step  # what was trained
    state.close()


def test_an_offer_restores_through_the_page_and_a_stale_one_goes_away():
    trained = ExperimentState(SPEC)
    for _ in range(7):
        trained.live.step_once()
    content, steps = trained.live.kept_bytes()
    trained.close()

    state = ExperimentState(SPEC)
    keeper = KeepView(state)
    sent = Sent(keeper)
    sent.answer({"offer": {"key": "someone else's", "steps": 3, "age_s": 5}})
    assert not keeper.offer.visible
    sent.answer({"offer": {"key": keeper.store.key, "steps": steps, "age_s": 5}})
    assert keeper.offer.visible and "7 steps, just now" in keeper.offer_text.object
    keeper.restore()
    assert sent.fetched == [keeper.store.key]
    sent.answer({"state": {"key": keeper.store.key, "data": base64.b64encode(content).decode()}})
    assert state.live.step == 7 and state.message == ""
    assert "Restored" in keeper.offer_text.object and not keeper.restore_button.visible
    assert not keeper.keep(force=True)  # the restored state is what the browser holds
    state.playing = True
    assert not keeper.offer.visible
    state.playing = False

    keeper.offered({"key": keeper.store.key, "steps": 7, "age_s": 5})
    state.set_seed(5)  # another experiment: the offer is not for it
    assert not keeper.offer.visible
    state.close()


def test_a_missing_or_garbled_kept_state_says_so_and_changes_nothing():
    state = ExperimentState(SPEC)
    keeper = KeepView(state)
    sent = Sent(keeper)
    state.live.step_once()
    sent.answer({"offer": {"key": keeper.store.key, "steps": 9, "age_s": 5}})
    sent.answer({"state": {"key": keeper.store.key, "data": None}})
    assert "no longer in this browser" in state.message and state.live.step == 1
    sent.answer({"offer": {"key": keeper.store.key, "steps": 9, "age_s": 5}})
    sent.answer({"state": {"key": keeper.store.key, "data": "@@not base64@@"}})
    assert "was not restored" in state.message and state.live.step == 1
    assert not keeper.offer.visible
    sent.answer({"failed": "QuotaExceededError"})
    assert "cannot keep your training" in state.message
    sent.answer({"kept": {"key": keeper.store.key, "steps": 1}})
    assert keeper.store.kept_steps == 1
    state.close()


def test_the_held_out_nll_and_density_come_back_bit_for_bit():
    first = ExperimentState(SPEC)
    for _ in range(20):
        first.live.step_once()
    first.render_now()
    content, _ = first.live.kept_bytes()
    second = ExperimentState(SPEC)
    assert second.restore(content)
    assert second.live.latest_evaluation() == first.live.latest_evaluation()
    np.testing.assert_array_equal(second.frame.model, first.frame.model)
    np.testing.assert_array_equal(second.frame.views.log_det, first.frame.views.log_det)
    first.close()
    second.close()


def test_a_keep_while_training_never_waits_for_a_step_and_comes_on_a_later_tick(monkeypatch):
    """The event loop that all sessions share keeps each session's state: while a step holds the
    model (long, under load), a periodic keep returns at once and a later tick keeps."""
    state = ExperimentState(SPEC)
    keeper = KeepView(state)
    sent = Sent(keeper)
    state.live.step_once()
    step, in_step, release = state.live.trainer.step, threading.Event(), threading.Event()

    def slow_step():
        in_step.set()
        release.wait(10)
        return step()

    monkeypatch.setattr(state.live.trainer, "step", slow_step)
    stepping = threading.Thread(target=state.live.step_once)
    stepping.start()
    assert in_step.wait(10)
    started = time.perf_counter()
    assert not keeper.keep()
    assert time.perf_counter() - started < 0.5 and sent.kept == []
    release.set()
    stepping.join(10)
    assert keeper.keep() and sent.kept[-1][1] == 2
    state.close()


def test_a_session_training_flat_out_is_kept_within_a_few_ticks():
    """The training thread takes the model's lock again right after each step; the keeper, which
    never waits for it, gets a copy taken between two steps on a later tick."""
    state = ExperimentState(SPEC)
    keeper = KeepView(state)
    sent = Sent(keeper)
    state.playing = True
    try:
        deadline = time.time() + 30
        while state.live.step < 20 and time.time() < deadline:
            time.sleep(0.01)
        while not sent.kept and time.time() < deadline:
            keeper.keep()
            time.sleep(0.02)  # the ticks of a page
        assert sent.kept and sent.kept[-1][1] >= 20 and state.playing
        assert int(read_session(sent.kept[-1][0], SPEC)["step"]) == sent.kept[-1][1]
    finally:
        state.close()


def test_while_training_the_training_thread_writes_the_kept_state_not_the_event_loop(monkeypatch):
    """Writing a kept state takes 8-12 ms (0.5 MB for realnvp-moons): while training, the training
    thread writes it between two steps, and the event loop all sessions share only sends it."""
    import flowviz.ui.live

    writers = []
    write = flowviz.ui.live.state_bytes
    monkeypatch.setattr(flowviz.ui.live, "state_bytes",
                        lambda *args: writers.append(threading.current_thread().name) or write(*args))
    state = ExperimentState(SPEC)
    state.playing = True
    kept, deadline = None, time.time() + 30
    while kept is None and time.time() < deadline:
        kept = state.live.kept_bytes(wait=False) if state.live.step >= 3 else None
        time.sleep(0.01)
    state.playing = False
    assert kept is not None, "the training thread never wrote the kept state"
    content, steps = kept
    assert writers == ["flowviz-train"] and 3 <= steps <= state.live.step
    restored = ExperimentState(SPEC)
    assert restored.restore(content) and restored.live.step == steps
    state.close()
    restored.close()
