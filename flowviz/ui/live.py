"""Live training for one browser session: the model, a training thread and a rendering thread.

Nothing here imports Panel or Bokeh. The explorer drives a `LiveSession` (play, pause, step, edit)
and calls `take_frame()` when `on_publish` says a frame is new (or from a slow periodic callback);
the frames are plain numpy.

Why two threads: a frame (every depth of the flow on a grid) costs several training steps. Rendering
on a copy of the weights in its own thread lets training run on while the frame is computed, so the
view refreshes up to MAX_FPS (20) times a second and training keeps most of its headless speed.
torch releases the GIL inside its kernels, so the two threads overlap on two cores.

Three kinds of frame (`Frame.kind`):
- "live", while training: the model view's ln q_K exact at LIVE_MODEL_RESOLUTION, the strips at
  LIVE_STRIP_RESOLUTION with each depth resampled from the one before (core.grid: K inversions
  per pixel instead of K(K+1)/2), refreshed on every STRIPS_EVERY-th frame (the frames between
  carry the same `views` object, which the strips do not send again). A flow whose live frames
  cost more than LIVE_FRAME_BUDGET (a continuous flow: every solver step needs the 2×2 Jacobian of
  its network on every pixel) is drawn at three quarters or half those sides until it fits
  (`next_live_scale`); the page says so;
- "preview", right after an edit or a step: the same, coarse, computed first;
- "exact", when paused: every depth through its exact inverse chain at the spec's resolution.
In a server session both are computed on the rendering thread (`request_exact`), ahead of other
sessions' work in the gate, so that neither a slow flow nor a busy server holds up the event loop
every session shares.

Example:
    >>> live = LiveSession(ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling"}]}))
    >>> live.step_once(), live.step
    (True, 1)
    >>> frame = live.render()
    >>> frame.views.log_q.shape[0], frame.kind   # depths 0..K
    (2, 'exact')
    >>> live.preview().kind, live.preview().views.exact
    ('preview', False)
    >>> live.close()
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from flowviz.core.build import build_base, build_flow, build_layer, shown_flow
from flowviz.core.checkpoint import read_session, state_bytes
from flowviz.core.flow import Flow
from flowviz.core.grid import GridRequest, GridViews, evaluate_grid, output_log_prob, target_image
from flowviz.core.layers import Layer
from flowviz.core.layers.base import HandleValue
from flowviz.core.ledger import Ledger, follow
from flowviz.core.spec import ExperimentSpec, LayerSpec
from flowviz.core.training import Evaluation, Trainer, TrainingDiverged

SAMPLES_SHOWN = 600  # base samples pushed through the stack in the sample views
TARGET_POINTS_SHOWN = 600
LIVE_MODEL_RESOLUTION = 96  # the model view's grid side while training; the spec's resolution when paused
LIVE_STRIP_RESOLUTION = 64  # the strips' grid side while training
PREVIEW_RESOLUTION = 48  # the first, coarse view after an edit, before the exact one (32 for a deep stack)
MAX_FPS = 20.0
STRIPS_EVERY = 3  # while training, the strips refresh on every 3rd frame, the model view on every one
UNTAKEN_WAIT = 0.5  # seconds the rendering thread waits for the page to take its last frame
LIVE_FRAME_BUDGET = 0.1  # seconds of rendering a live frame should take, at most
LIVE_SCALES = (1.0, 0.75, 0.5)  # of the live resolutions, for flows that cost more than the budget
FIT_POINTS_LIVE = 512  # evaluation points for the KL after each layer in a live frame (~5 ms for 8 couplings)
FIT_EVERY = 1.0  # seconds between those live estimates; the frames between carry the last one
# ... and live frames between them: under a class's load (1-2 frames/s a session) a once-a-second
# estimate came with nearly every frame, a third of its compute (py-spy, 30 sessions on 2 processes).
FIT_EVERY_FRAMES = 4
VIEWS_PANELS = frozenset({"overview", "density", "log_det", "samples"})  # the panels that show a frame's `views`


def next_frame_due(due: float, now: float, period: float) -> float:
    """When the live frame after one due at `due` and started at `now` is due: `period` later, and
    after a late frame at once, making up at most one period. A frame with the strips takes longer
    than one without; pacing each frame from its own start (wait out 50 ms after a 35 ms frame, none
    after a 60 ms one) gave 18 frames/s where frames averaged under 50 ms.

    Example:
        >>> next_frame_due(1.0, 1.0, 0.05)   # on time: one period later
        1.05
        >>> next_frame_due(1.05, 1.07, 0.05)  # 20 ms late: the next is due 30 ms from now
        1.1
        >>> next_frame_due(1.0, 9.0, 0.05)   # after a pause: no burst of frames to catch up
        9.0
    """
    return max(due, now - period) + period


def next_live_scale(index: int, seconds: float) -> int:
    """The index into LIVE_SCALES for the next live frames, after frames that took `seconds` of CPU
    each to render: coarser above 1.5× the budget, finer again below 0.4× (the gap keeps it from flickering
    between two sizes; a RealNVP frame, 40-65 ms, never leaves full size).

    Example:
        >>> next_live_scale(0, 0.3), next_live_scale(1, 0.3), next_live_scale(2, 0.3)
        (1, 2, 2)
        >>> next_live_scale(2, 0.03), next_live_scale(1, 0.08), next_live_scale(0, 0.03)
        (1, 1, 0)
    """
    if seconds > 1.5 * LIVE_FRAME_BUDGET:
        return min(index + 1, len(LIVE_SCALES) - 1)
    if seconds < 0.4 * LIVE_FRAME_BUDGET:
        return max(index - 1, 0)
    return index


def _tensors_of(flow: Flow) -> list[torch.Tensor]:
    return [*flow.parameters(), *flow.buffers()]


class ComputeGate:
    """Lets at most `slots` heavy jobs (training steps, frame renders) run at once, first come first
    served.

    One server process shares one gate among all its sessions (app.py keeps it in `pn.state.cache`;
    it holds no session's data). Without it, 30 sessions are 60 runnable threads fighting over the
    GIL and two cores: measured with 10 sessions, two thirds of the CPU went to that fight, and each
    page got 1 frame/s. Jobs hand their slot straight to the oldest waiter, so a thread that loops
    (training) cannot take it back ahead of the others. Urgent jobs (a click's frame) go ahead of
    all others, and while `held` (a page being built) only they start.
    """

    def __init__(self, slots: int):
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: deque[threading.Lock] = deque()
        self._urgent: deque[threading.Lock] = deque()
        self._holds = 0

    def __enter__(self) -> None:
        self._wait(urgent=False)

    @contextlib.contextmanager
    def urgent(self):
        """A slot ahead of every waiting job: for the frame a click asked for, which a person is
        watching for, not for the steady stream of training steps and live frames."""
        self._wait(urgent=True)
        try:
            yield
        finally:
            self.__exit__()

    @contextlib.contextmanager
    def held(self):
        """No new training step or live frame starts inside the block (those under way finish;
        urgent jobs still start): for building a page, which the event loop shared by every
        session does, and which otherwise waits for the GIL behind a whole class's training."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                while not self._holds and self._free and self._waiting:
                    self._free -= 1
                    self._waiting.popleft().release()

    def _wait(self, urgent: bool) -> None:
        with self._lock:
            if self._free and not self._urgent and (urgent or not (self._holds or self._waiting)):
                self._free -= 1
                return
            ticket = threading.Lock()
            ticket.acquire()
            (self._urgent if urgent else self._waiting).append(ticket)
        ticket.acquire()  # released by the job that hands its slot over

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._urgent:
                self._urgent.popleft().release()
            elif self._waiting and not self._holds:
                self._waiting.popleft().release()
            else:
                self._free += 1


def rate_per_second(times: deque[float], window: float = 2.0) -> float:
    """Events per second over the last `window` seconds of `times` (0 once they have stopped)."""
    now = time.perf_counter()
    recent = [t for t in list(times) if now - t <= window]
    if len(recent) < 2 or now - recent[-1] >= 1.0:
        return 0.0
    return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


@dataclass
class Frame:
    """What the views draw, taken at one training step."""

    step: int
    views: GridViews  # every depth, for the strips (resampled depth to depth unless views.exact)
    model: np.ndarray  # ln q_K on the model view's grid, through the exact inverse chain
    layer_titles: list[str]  # title of the layer at each depth 1..K
    kind: str = "exact"  # "exact", "live" or "preview" (see the module)
    # The true KL after each layer, k = 0..K (None where p is unknown): from every evaluation point in an
    # exact frame, from FIT_POINTS_LIVE of them in the others (a new estimate at most every FIT_EVERY
    # seconds and FIT_EVERY_FRAMES frames)
    kl_by_depth: list[float] | None = None

    @property
    def transient(self) -> bool:
        """A live or preview frame: soon replaced, so the page gets it as colour indices, a byte a pixel."""
        return self.kind != "exact"


@dataclass
class TargetPicture:
    density: np.ndarray  # (R, R) target density on the view grid
    points: np.ndarray  # (n, 2) target samples to overlay


class TargetPictures:
    """The target's picture per (target, view, seed), shared by a process's sessions: a class of 30
    opening one preset computes it once. The 1000-knot curve density of the moons on a 128² grid
    took ~0.43 s of a new page's ~0.8 s on the event loop every session shares. Safe to share: a
    picture is a pure function of its key, and its arrays are read-only."""

    def __init__(self, size: int = 8):
        self._lock = threading.Lock()
        self._pictures: dict[str, TargetPicture] = {}
        self._size = size

    def get(self, spec: ExperimentSpec, target) -> TargetPicture:
        key = json.dumps([asdict(spec.target), asdict(spec.view), spec.seed], sort_keys=True)
        with self._lock:
            picture = self._pictures.pop(key, None)
        if picture is None:
            points = target.sample(TARGET_POINTS_SHOWN, torch.Generator().manual_seed(spec.seed + 2)).numpy()
            picture = TargetPicture(target_image(target, GridRequest.from_view(spec.view), seed=spec.seed), points)
            picture.density.flags.writeable = picture.points.flags.writeable = False
        with self._lock:
            self._pictures[key] = picture  # the newest last: the oldest goes first
            while len(self._pictures) > self._size:
                del self._pictures[next(iter(self._pictures))]
        return picture


PICTURES = TargetPictures()


class LiveSession:
    """One session's experiment. Thread-safe: the UI thread edits, the worker threads train and render.

    `layer_ids` name the layers of the stack across edits: a layer whose id, type and settings
    survive an edit keeps its trained weights.
    """

    def __init__(self, spec: ExperimentSpec, device: str = "cpu", layer_ids: list[int] | None = None,
                 gate: ComputeGate | None = None):
        self._gate = gate if gate is not None else contextlib.nullcontext()
        self._lock = threading.RLock()  # guards the model, the trainer and the histories
        self._stop = threading.Event()
        self._playing = threading.Event()
        self._snapshot_wanted = threading.Event()  # the rendering thread waits for the lock to copy the model
        self._snapshot_done = threading.Event()
        self._snapshot_taken = threading.Condition(self._lock)  # a live frame copied the model
        self._replica: Flow | None = None  # the rendering thread's copy of the model, only it writes it
        self._replica_key: tuple[int, int] | None = None
        self._replica_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._edits = 0  # counts changes to the model other than training steps
        self._kept_copy_wanted = threading.Event()  # the page's keeper asked while training
        self._kept: tuple[bytes, int] | None = None  # written for it by the training thread
        self._exact_wanted = threading.Event()
        self._preview_wanted = False  # the rendering thread shows a coarse frame before the exact one
        self._preview_only = False  # the rendering thread shows a coarse frame and no exact one (a hand drags)
        self._version = 0  # counts changes to the model (steps, edits): an exact frame of an older one is dropped
        self._frame_lock = threading.Lock()
        self._frame: Frame | None = None
        self._taken = threading.Event()  # the last published frame was taken (or none was published)
        self._taken.set()
        self._threads: list[threading.Thread] = []
        self.steps_per_frame = 0  # 0: as many as fit between frames; n: at most n (slow motion)
        self.on_publish: Callable[[], None] | None = None  # called, on the publishing thread, after each new frame
        self.error: str | None = None
        self.frames_rendered = 0
        self.render_seconds = 0.0  # wall time spent computing live frames (for the benchmarks)
        self._live_views: GridViews | None = None  # the strips of the last live frame, reused between refreshes
        self._live_request: GridRequest | None = None
        self._live_frames = 0
        self._live_scale = 0  # index into LIVE_SCALES
        self._live_costs: deque[float] = deque(maxlen=STRIPS_EVERY)  # CPU seconds of the last live frames
        # (when, with which live frame, the KL after each layer): the last live estimate
        self._live_fit: tuple[float, int, list[float] | None] = (-math.inf, 0, None)
        self._step_times: deque[float] = deque(maxlen=400)
        self._frame_times: deque[float] = deque(maxlen=60)
        self._steps_since_snapshot = 0
        # Panels the page does not show now ("overview", "density", "log_det", "samples"): live frames
        # skip what only they would show, and the views draw them from the newest frame once seen.
        self.unseen: frozenset[str] = frozenset()
        self._live_model: np.ndarray | None = None
        self._load(spec, device, layer_ids)

    # -- building -----------------------------------------------------------------------------------
    def _load(self, spec: ExperimentSpec, device: str, layer_ids: list[int] | None,
              trainer: Trainer | None = None) -> None:
        trainer = trainer if trainer is not None else Trainer(spec, device, build_flow(spec))
        flow = trainer.flow
        with self._lock:
            self.spec, self.device, self.trainer = spec, device, trainer
            self.layer_ids = list(layer_ids) if layer_ids is not None else list(range(len(spec.layers)))
            self._modules = {i: (layer, module) for i, layer, module in zip(self.layer_ids, spec.layers, flow.layers)}
            self._prepare_views()
            self._model_changed()

    def _model_changed(self) -> None:
        """After a new or edited flow (under the lock): frames of the old one are stale, and the new
        one starts at full size (it may cost less) with a fresh live KL estimate."""
        self._version += 1
        self._edits += 1
        self._live_scale = 0
        self._live_fit = (-math.inf, 0, None)
        self._live_model = None
        with self._frame_lock:  # a kept state being written is of the model before: dropped
            self._kept_copy_wanted.clear()
            self._kept = None

    def _prepare_views(self) -> None:
        spec = self.spec
        self._noise_seed = spec.seed + 1
        self.target_picture = PICTURES.get(spec, self.trainer.target)

    @property
    def flow(self) -> Flow:
        return self.trainer.flow

    @property
    def step(self) -> int:
        return self.trainer.step_count

    @property
    def losses(self) -> list[float]:
        """The loss of every step of this curve (the trainer's own list: step i + 1 is `losses[i]`)."""
        return self.trainer.losses

    @property
    def evaluations(self) -> list[Evaluation]:
        return self.trainer.evaluations

    def load(self, spec: ExperimentSpec, layer_ids: list[int] | None = None) -> None:
        """A different experiment altogether, untrained (a preset, a file, a link)."""
        self.pause()
        with self._lock:
            self._load(spec, self.device, layer_ids)
            self.error = None

    def reset(self) -> None:
        """Back to the spec's untrained state (same seed, same weights as a fresh link)."""
        with self._lock:
            self._load(self.spec, self.device, self.layer_ids)
            self.error = None

    def kept_bytes(self, wait: bool = True) -> tuple[bytes, int] | None:
        """This session's whole training state (core.checkpoint.session_bytes) and its step count.

        Written from a copy taken under the lock, outside it (8-12 ms for realnvp-moons, 0.5 MB).
        Without `wait`, for a caller that must not wait for a step or write it (the event loop all
        sessions share): while training, the training thread copies and writes it between its next
        two steps and a later call gets it (None until then); paused, it is written here if the
        model is free (else None: a step or a frame holds it)."""
        if not wait and self.playing:
            with self._frame_lock:
                kept, self._kept = self._kept, None
                if kept is None:
                    self._kept_copy_wanted.set()
            return kept
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            spec, state, step = self._training_state_copy()
        finally:
            self._lock.release()
        with self._frame_lock:  # this answers a request still pending: the training thread drops its copy
            self._kept_copy_wanted.clear()
            self._kept = None
        return state_bytes(spec, state), step

    def _training_state_copy(self) -> tuple[ExperimentSpec, dict, int]:
        return self.trainer.spec, self.trainer.training_state(), self.step

    def _serve_kept_copy(self) -> None:
        with self._lock:
            spec, state, step = self._training_state_copy()
        kept = state_bytes(spec, state), step
        with self._frame_lock:
            # Unless a call that took its own copy (a pause's) answered the request meanwhile. Cleared
            # only now: a call while it was written would otherwise have asked for another.
            if self._kept_copy_wanted.is_set():
                self._kept = kept
                self._kept_copy_wanted.clear()

    def restore(self, content: bytes) -> int:
        """Carry on from a kept training state of this experiment; returns its step count. ValueError
        (with the reason) for one that is damaged or of another experiment: nothing changes then."""
        state = read_session(content, self.spec)
        candidate = Trainer(self.spec, self.device, build_flow(self.spec))
        candidate.load_training_state(state)
        self.pause()
        with self._lock:
            self._load(self.spec, self.device, None, trainer=candidate)
            self.error = None
        return self.step

    def apply(self, spec: ExperimentSpec, layer_ids: list[int], device: str | None = None) -> None:
        """Move to an edited spec, keeping what the edit did not touch.

        Layers whose id, type and settings are unchanged keep their weights; a new or re-configured
        layer starts fresh (couplings and splines start as the identity, so the density does not
        jump). A new seed rebuilds everything. A new target or objective clears the loss curve.
        """
        if len(layer_ids) != len(spec.layers):
            raise ValueError("one id per layer")
        device = self.device if device is None else device
        with self._lock:
            old = self.spec
            if spec.seed != old.seed:
                self._load(spec, device, layer_ids)
                return
            base = self.flow.base if spec.base == old.base else build_base(spec.base, spec.seed)
            modules: dict[int, tuple[LayerSpec, Layer]] = {}
            for layer_id, layer in zip(layer_ids, spec.layers):
                kept = self._modules.get(layer_id)
                same = kept is not None and (kept[0].type, kept[0].settings) == (layer.type, layer.settings)
                module = kept[1] if same else build_layer(layer, spec.seed * 1009 + layer_id)
                modules[layer_id] = (layer, module)
            flow = Flow(base, [modules[i][1] for i in layer_ids], [layer.enabled for layer in spec.layers])
            same_problem = spec.target == old.target and spec.training.objective == old.training.objective
            structure_same = (device == self.device and base is self.flow.base
                              and [m for _, m in modules.values()] == list(self.flow.layers))
            if same_problem and structure_same:
                self.trainer.retune(spec)
                self.flow.enabled = flow.enabled
            else:
                previous = self.trainer
                self.trainer = Trainer(spec, device, flow)
                if same_problem:  # the same curve goes on: keep the step count (and the annealing)
                    self.trainer.adopt_history(previous)
            target_changed = spec.target != old.target or spec.view != old.view or spec.seed != old.seed
            self.spec, self.device, self.layer_ids, self._modules = spec, device, list(layer_ids), modules
            if target_changed:
                self._prepare_views()
            self._model_changed()
            self.error = None

    # -- training -----------------------------------------------------------------------------------
    def _train_one(self) -> bool:
        """One step under the lock; False (and paused, with `error` set) if it diverged."""
        with self._lock:
            try:
                self.trainer.step()
            except TrainingDiverged as diverged:
                self.error = str(diverged)
                self._playing.clear()
                return False
            if self.trainer.step_count % self.trainer.settings.eval_every == 0:
                self.trainer.evaluate()
            self._version += 1
            self._steps_since_snapshot += 1
            self._step_times.append(time.perf_counter())
            return True

    def step_once(self) -> bool:
        self.error = None
        return self._train_one()

    @property
    def playing(self) -> bool:
        return self._playing.is_set()

    @property
    def running(self) -> bool:
        """Whether this session's training and rendering threads exist (until `close`)."""
        return bool(self._threads)

    def _start_threads(self) -> None:
        if not self._threads and not self._stop.is_set():
            self._threads = [threading.Thread(target=self._train_loop, name="flowviz-train", daemon=True),
                             threading.Thread(target=self._render_loop, name="flowviz-render", daemon=True)]
            for thread in self._threads:
                thread.start()

    def play(self) -> None:
        self.error = None
        self._start_threads()
        self._playing.set()

    def pause(self) -> None:
        self._playing.clear()
        with self._frame_lock:
            if self._frame is not None and self._frame.kind == "live":
                self._frame = None  # a live frame not yet shown would come after the paused view
                self._taken.set()

    def close(self) -> None:
        """Stop and join the threads (the session is gone). Idempotent."""
        self._stop.set()
        self._playing.set()  # wake the loops so they see the stop flag
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _train_loop(self) -> None:
        while not self._stop.is_set():
            if not self._playing.wait(0.2) or self._stop.is_set():
                continue
            if self._snapshot_wanted.is_set():
                self._snapshot_done.wait(0.5)  # step aside: the rendering thread copies the model now
            if self._kept_copy_wanted.is_set():
                self._serve_kept_copy()
            if self.steps_per_frame:
                with self._lock:
                    if self._steps_since_snapshot >= self.steps_per_frame:
                        self._snapshot_taken.wait(0.05)  # slow motion: wait for a frame to show these steps
                        continue
            with self._gate:
                self._train_one()

    def _render_loop(self) -> None:
        period, due = 1 / MAX_FPS, 0.0
        while not self._stop.is_set():
            if self._playing.is_set():
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                due = next_frame_due(due, now, period)
                self._live_frame()
            elif self._exact_wanted.wait(0.2) and not self._stop.is_set():
                self._exact_frame()

    def _take_snapshot(self) -> tuple[Flow, int]:
        """The model and its step count for a live frame: the rendering thread's replica, refreshed.

        The training thread steps aside for it between two steps (a lock alone would go back to the
        training loop, which takes it again at once); under load, where the training thread waits at
        the gate between steps, the lock is free at once. Before, the training thread made the copy
        when it came round, and in a class of 30 each frame waited a second turn at the gate for it."""
        self._snapshot_done.clear()
        self._snapshot_wanted.set()
        try:
            with self._lock:
                snapshot = self._refreshed_replica(), self.trainer.step_count
                self._steps_since_snapshot = 0
                self._snapshot_taken.notify_all()
        finally:
            self._snapshot_wanted.clear()
            self._snapshot_done.set()
        return snapshot

    def _refreshed_replica(self) -> Flow:
        """A deep copy after an edit (which may change more than tensors: layers, the enabled set),
        else the trained tensors copied into the last one: 0.04 ms instead of the 7 ms of Python a
        deep copy of 8 couplings takes, once a frame, holding the GIL that training needs."""
        key = (self._edits, id(self.flow))
        if self._replica is None or key != self._replica_key:
            self._replica, self._replica_key = copy.deepcopy(self.flow), key
            self._replica_pairs = list(zip(_tensors_of(self._replica), _tensors_of(self.flow), strict=True))
        else:
            with torch.no_grad():
                for copied, trained in self._replica_pairs:
                    copied.copy_(trained)
        return self._replica

    def _live_frame(self) -> None:
        flow, step = self._take_snapshot()
        asked = time.perf_counter()
        with self._gate:
            started, cpu_started = time.perf_counter(), time.thread_time()
            frame = self._render(flow, step, "live")
            self.render_seconds += time.perf_counter() - started
        # What a frame costs: this thread's CPU time (torch computes on it, one thread), which a busy
        # machine does not inflate as it does the wall time, and its wait for a compute slot, which is
        # the other sessions' work: a server over its budget (a class of 30) draws coarser frames, and
        # a session alone (no wait) keeps its full resolution on a busy machine.
        self._live_costs.append(time.thread_time() - cpu_started + started - asked)
        if len(self._live_costs) == STRIPS_EVERY:  # a whole cycle: model-only frames and one with the strips
            scale = next_live_scale(self._live_scale, sum(self._live_costs) / STRIPS_EVERY)
            if scale != self._live_scale:
                self._live_scale = scale
                self._live_costs.clear()
        # Flow control: a frame waits for the page to take the one before, so a slow page (or a
        # busy server) gets fewer frames instead of frames computed for nothing; the next one is
        # computed while the page paints this one.
        self._taken.wait(UNTAKEN_WAIT)
        if self._playing.is_set():  # (paused meanwhile: the exact frame stands in for it)
            self._publish(frame)

    def _exact_frame(self) -> None:
        self._exact_wanted.clear()
        preview, self._preview_wanted = self._preview_wanted, False
        if self._preview_only:
            self._preview_only = False
            with self._lock:
                flow, step = copy.deepcopy(self.flow), self.step
            with self._urgent():
                frame = self._render(flow, step, "preview")
            if not self._playing.is_set():  # (even if the hand has moved on since: it shows the drag as it goes)
                self._publish(frame)
            return
        with self._lock:
            flow, step, version = copy.deepcopy(self.flow), self.step, self._version
        # Asked for by a click (Pause, Step, an edit): ahead of other sessions' training and live frames.
        for kind in ("preview", "exact") if preview else ("exact",):
            with self._urgent():
                frame = self._render(flow, step, kind)
            if version != self._version or self._playing.is_set():
                return  # the model has moved on
            self._publish(frame)

    def _urgent(self):
        return self._gate.urgent() if isinstance(self._gate, ComputeGate) else contextlib.nullcontext()

    def request_preview(self) -> None:
        """Render only a coarse frame of the current model on the rendering thread (while a hand
        drags a handle: each drag event makes the last one's frame stale; the exact one follows
        from `request_exact` when the hand lets go)."""
        self._start_threads()
        self._preview_only = True
        self._exact_wanted.set()

    def request_exact(self, preview: bool = False) -> None:
        """Render the exact frame of the current model on the rendering thread, after a coarse one if
        `preview`; `take_frame` gets them."""
        self._start_threads()
        self._preview_only = False
        self._preview_wanted = self._preview_wanted or preview
        self._exact_wanted.set()

    # -- frames -------------------------------------------------------------------------------------
    def _request(self, resolution: int) -> GridRequest:
        view = replace(self.spec.view, resolution=min(resolution, self.spec.view.resolution))
        return replace(GridRequest.from_view(view), grid_lines=13, line_points=33)

    def _shown(self, flow: Flow) -> Flow:
        return shown_flow(flow, self.spec)

    def depths(self) -> int:
        """How many depths past the base the views show."""
        with self._lock:
            return len(self._shown(self.flow).active())

    def _render(self, flow: Flow, step: int, kind: str) -> Frame:
        flow = self._shown(flow)
        noise = flow.base.sample(SAMPLES_SHOWN, torch.Generator().manual_seed(self._noise_seed)).detach()
        if kind == "exact":
            views = evaluate_grid(flow, self._request(self.spec.view.resolution), noise)
            model = views.log_q[-1]
        elif kind == "preview":
            # A stack of 32 planar layers (bisection in every inverse) takes ~1 s at 48²: deep stacks get 32².
            resolution = PREVIEW_RESOLUTION if len(flow.active()) <= 16 else 32
            views = evaluate_grid(flow, self._request(resolution), noise, exact=False)
            model = views.log_q[-1]
        else:
            scale = LIVE_SCALES[self._live_scale]
            request = self._request(round(LIVE_STRIP_RESOLUTION * scale))
            views, self._live_frames = self._live_views, self._live_frames + 1
            due = self._live_frames % STRIPS_EVERY == 0 and not VIEWS_PANELS <= self.unseen
            if due or views is None or views.layers != [i for i, _ in flow.active()] or self._live_request != request:
                views = self._live_views = evaluate_grid(flow, request, noise, exact=False)
                self._live_request = request
            model = self._live_model
            if model is None or "overview" not in self.unseen:
                model = self._live_model = output_log_prob(flow, self._request(round(LIVE_MODEL_RESOLUTION * scale)))
        titles = [layer.info.title for _, layer in flow.active()]
        return Frame(step, views, model, titles, kind, self._kl_by_depth(flow, kind))

    def _kl_by_depth(self, flow: Flow, kind: str) -> list[float] | None:
        trainer = self.trainer
        if kind == "exact":
            return trainer.kl_by_depth(flow)
        when, with_frame, fit = self._live_fit
        depths = len(flow.active()) + 1
        due = time.perf_counter() - when >= FIT_EVERY and self._live_frames - with_frame >= FIT_EVERY_FRAMES
        if fit is None or len(fit) != depths or due:
            fit = trainer.kl_by_depth(flow, FIT_POINTS_LIVE)
            self._live_fit = (time.perf_counter(), self._live_frames, fit)
        return fit

    def _publish(self, frame: Frame) -> None:
        with self._frame_lock:
            self._frame = frame
            self._taken.clear()
            self.frames_rendered += 1
            self._frame_times.append(time.perf_counter())
        if self.on_publish is not None:
            self.on_publish()

    def render(self) -> Frame:
        """The exact frame, now, in the caller's thread (outside a server: tests, tools); also published."""
        with self._lock:
            frame = self._render(self.flow, self.step, "exact")
        self._publish(frame)
        return frame

    def preview(self) -> Frame:
        """A coarse frame of the current model, now, in the caller's thread (not published)."""
        with self._lock:
            return self._render(self.flow, self.step, "preview")

    def take_frame(self) -> Frame | None:
        """The newest frame not yet taken, or None."""
        with self._frame_lock:
            frame, self._frame = self._frame, None
            self._taken.set()
        return frame

    # -- rates --------------------------------------------------------------------------------------
    def steps_per_second(self) -> float:
        return rate_per_second(self._step_times)

    def over_budget(self) -> bool:
        """Whether live frames are drawn coarser than full size: they cost more than the budget,
        counting their wait for a compute slot (a busy server, a class)."""
        return self._live_scale > 0

    def frames_per_second(self) -> float:
        return rate_per_second(self._frame_times)

    # -- by hand ------------------------------------------------------------------------------------
    def _part(self, part: int | str):
        """The module hand mode names: "base", or a layer by its id."""
        return self.flow.base if part == "base" else self._modules[part][1]

    def handles(self, part: int | str) -> dict[str, HandleValue]:
        """The hand-mode handles of a layer (by id) or of "base", as it has them now."""
        with self._lock:
            return self._part(part).handles()

    def move(self, part: int | str, values: dict[str, HandleValue]) -> dict[str, HandleValue]:
        """Set handles by hand (`Layer.move`, `Base.move`; HandleError if it cannot take them): the
        next frame and the next training step start from there."""
        with self._lock:
            moved = self._part(part).move(values)
            self._version += 1
            self._edits += 1
            return moved

    def part_state(self, part: int | str) -> dict[str, torch.Tensor]:
        with self._lock:
            return {key: value.clone() for key, value in self._part(part).state_dict().items()}

    def restore_part(self, part: int | str, state: dict[str, torch.Tensor]) -> None:
        with self._lock, torch.no_grad():
            self._part(part).load_state_dict(state)
            self._version += 1
            self._edits += 1

    def copy_flow(self) -> Flow:
        """A copy of the current model, for exports that run while training goes on."""
        with self._lock:
            return copy.deepcopy(self.flow)

    def follow(self, point: tuple[float, float], depth: int) -> Ledger:
        """The ledger of `point` at depth `depth` under the current weights (see core.ledger)."""
        with self._lock:
            shown = self._shown(self.flow)
            return follow(shown, point, min(depth, len(shown.active())))

    def latest_evaluation(self) -> Evaluation | None:
        return self.evaluations[-1] if self.evaluations else None


