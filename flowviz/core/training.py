"""Training: forward KL (maximum likelihood on target samples), reverse KL (variational
inference against the target's energy) and flow matching (a continuous flow's velocity regressed
onto straight paths), with Adam, clipping, and a guard against divergence.

    forward KL:     loss = -E_p[ln q_K(x)]                  (= KL(p‖q) + H(p))
    reverse KL:     loss =  E_q[ln q_K(x) + U(x)]           (= KL(q‖p) - ln Z)
    flow matching:  loss =  E‖v(x_t, t) - (x_1 - x_0)‖²,    x_t = (1 - t) x_0 + t x_1,
                    x_0 ~ q_0, x_1 ~ p, t ~ U[0, 1]          (Lipman et al. 2023, arXiv:2210.02747, with
                    σ_min = 0: rectified flow, Liu et al. 2023, arXiv:2209.03003)

Flow matching never solves the ODE while training; the held-out NLL and KL(p‖q) are still those of
the solved map's exact density. With `pairing = "optimal_transport"` each batch's base and data
points are paired by an optimal assignment of squared distances (Tong et al. 2023,
arXiv:2302.00482), which straightens the paths the field learns.

A step whose loss, gradients or updated parameters are not finite is rejected: the parameters and
buffers from before the step come back, and `TrainingDiverged` names the first layer that went
wrong. The UI calls `Trainer.step` in a loop; the CLI calls `Trainer.run`.

Example:
    >>> spec = ExperimentSpec.from_dict({"target": {"name": "8gaussians"},
    ...     "layers": [{"type": "spline_coupling", "settings": {"transformed": t}} for t in ("z1", "z2")],
    ...     "training": {"learning_rate": 3e-3, "batch_size": 256}})
    >>> trainer = Trainer(spec)
    >>> metrics = trainer.run(300)
    >>> metrics["steps"], metrics["kl"] < 1.0, len(trainer.losses)
    (300, True, 300)
"""

from __future__ import annotations

import enum
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowviz.core.adam import Adam, flatten
from flowviz.core.build import build_flow, build_target
from flowviz.core.devices import resolve_device
from flowviz.core.diagnostics import forward_ess, importance, kl_by_depth
from flowviz.core.flow import Flow
from flowviz.core.graphed import GraphedStep
from flowviz.core.spec import ExperimentSpec


class Stage(enum.Enum):
    """Where in a step the guard found a non-finite value."""

    LOSS = "non-finite loss"
    GRADIENT = "non-finite gradient"
    PARAMETERS = "non-finite parameters after the update"


class TrainingDiverged(RuntimeError):
    """A step produced non-finite values; the model was restored to its last finite state."""

    def __init__(self, step: int, layer_position: int | None, layer_title: str, stage: Stage, learning_rate: float):
        self.step, self.layer_position, self.layer_title, self.stage = step, layer_position, layer_title, stage
        where = "the base distribution" if layer_position is None else f"layer {layer_position + 1} ({layer_title})"
        super().__init__(
            f"Training stopped at step {step}: {where} produced non-finite values ({stage.value}). "
            f"The step was rejected and the last finite parameters were restored. "
            f"Try a smaller learning rate (now {learning_rate:g}) or turn on gradient clipping."
        )


@dataclass
class Evaluation:
    step: int
    test_nll: float
    kl: float | None  # KL(p‖q) for forward-KL training, KL(q‖p) for reverse; None if p is unknown
    ess: float | None = None  # normalised ESS: from q's samples under reverse KL, else from the target's
    log_z: float | None = None  # ln Ẑ by importance sampling from q (reverse KL), and its standard error
    log_z_se: float | None = None


def _flat(tensors: list[Tensor]) -> Tensor:
    """All values in one vector. On a CPU one `cat` costs less than the per-tensor kernels that
    torch's foreach ops fall back to there (~100 tensors a step for an 8-layer flow)."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _all_finite(tensors: list[Tensor]) -> bool:
    return bool(torch.isfinite(_flat(tensors)).all())


class _Snapshot:
    """A copy of a module's parameters and buffers, one flat vector per dtype, to restore after a
    rejected step. `flat`: the vector the parameters are views of (`flatten`), copied in one go;
    `tensors` then the rest (buffers)."""

    def __init__(self, tensors: list[Tensor], flat: Tensor | None = None):
        self._flat, self._flat_saved = flat, (torch.empty_like(flat) if flat is not None else None)
        self._groups: dict[tuple, list[Tensor]] = {}
        for t in tensors:
            self._groups.setdefault((t.dtype, t.device), []).append(t.detach())
        self._saved: dict[tuple, Tensor] = {}

    def save(self) -> None:
        if self._flat is not None:
            self._flat_saved.copy_(self._flat)
        self._saved = {key: _flat(group) for key, group in self._groups.items()}

    def restore(self) -> None:
        with torch.no_grad():
            if self._flat is not None:
                self._flat.copy_(self._flat_saved)
            for key, group in self._groups.items():
                values = self._saved[key].split([t.numel() for t in group])
                for tensor, value in zip(group, values):
                    tensor.copy_(value.view_as(tensor))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


EVALUATION_FIELDS = ("step", "test_nll", "kl", "ess", "log_z", "log_z_se")


def _evaluation_row(evaluation: Evaluation) -> list[float]:
    """An evaluation as numbers (None as NaN), for a training state that loads without unpickling."""
    return [math.nan if value is None else float(value) for value in (getattr(evaluation, f) for f in EVALUATION_FIELDS)]


def _evaluation_from_row(row: list[float]) -> Evaluation:
    step, test_nll, *optional = row
    return Evaluation(int(step), test_nll, *(None if math.isnan(value) else value for value in optional))


def _tensors(value: Any, what: str) -> dict[str, Tensor]:
    if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())):
        raise ValueError(f"{what} are missing or not tensors")
    return value


class CompiledOnce:
    """`torch.compile(function)` for a model that stays as it is, which checks Dynamo's guards only
    for a batch shape it has not yet run.

    Before each call of a compiled function Dynamo checks that everything its graph read is as it
    was: every parameter's metadata, every attribute the layers consulted. Without it a RealNVP-8
    call is ~0.13 ms faster, 2-3% of a step (`bench/compiled_guards.py`, one thread; `torch.profiler`
    put the check at 0.35 ms). A compiled Trainer's model keeps its parameters (updated
    in place), its layers and training mode, and its batch shape as long as its settings do: a shape
    that has run once runs again without the check (`torch.compiler.set_stance`'s
    `skip_guard_eval_unsafe`), and a new one (a retune to another batch size) is checked and compiles
    anew. For a fixed experiment only (the CLI, the benchmarks); the app, whose stack changes, never
    compiles.

    Example:
        >>> double = CompiledOnce(lambda x: 2 * x)
        >>> double(torch.ones(3)).tolist(), double(torch.ones(3)).tolist(), double(torch.ones(2)).tolist()
        ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [2.0, 2.0])
    """

    def __init__(self, function: Callable):
        self._compiled = torch.compile(function, dynamic=False)
        self._shapes: set[torch.Size] = set()

    def __call__(self, x: Tensor):
        if x.shape in self._shapes:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return self._compiled(x)
        result = self._compiled(x)
        self._shapes.add(x.shape)
        return result


class Trainer:
    """Owns one experiment's model, optimiser, random streams and history (the loss of every step,
    `losses[i]` being step i + 1's, and every evaluation). Not shared across sessions."""

    def __init__(self, spec: ExperimentSpec, device: str = "cpu", flow: Flow | None = None, compile: bool = False,
                 cuda_graph: bool = True):
        """`cuda_graph`: on a CUDA device, take each step (forward KL, or reverse KL from a fixed base)
        as one CUDA graph where the layers allow it (`graphed.py`: the same kernels, without launching
        each)."""
        self.spec = spec
        self.device = resolve_device(device)
        self.flow = (flow if flow is not None else build_flow(spec)).to(self.device)
        # torch.compile fuses each layer's small kernels (1.3-2.7x the steps/s of eager on a CPU, see
        # bench/peers.py) for a one-off compile of ~25 s: worth it for a headless run, not for the
        # app, where every edit of the stack would compile again.
        if compile and self.device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
            raise ValueError("torch.compile needs a C++ compiler on a CPU and none was found: install g++ "
                             "(apt-get install g++) or train without compiling")
        self.compiled = compile
        self._log_prob = CompiledOnce(self.flow.log_prob) if compile else self.flow.log_prob
        self._push = CompiledOnce(self.flow.forward) if compile else self.flow.forward
        self.target = build_target(spec.target, spec.seed)
        self.settings = spec.training  # `retune` replaces it
        self.objective: str = self.settings.objective
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.test_points = self.target.held_out(self.settings.test_size, spec.seed).to(self.device)
        self._test_log_p: Tensor | None = None  # the target's ln p at test_points, once asked for
        self._parameters = list(self.flow.parameters())
        # The weights as views of one vector: the step's copy, checks and update are one kernel each
        self._flat = flatten(self._parameters)
        # An empty stack over a fixed base has nothing to learn; steps then only measure the loss.
        fused = self.device.type in ("cpu", "cuda")  # one kernel for the whole update, where torch has it
        self.optimizer = (Adam(self._parameters, self.settings.learning_rate, fused=fused, flat=self._flat)
                          if self._parameters else None)
        self.step_count = 0
        self.losses: list[float] = []
        self.last_grad_norm: float | None = None
        self.evaluations: list[Evaluation] = []
        if self._flat is None:
            self._snapshot = _Snapshot(list(self.flow.state_dict(keep_vars=True).values()))
        else:
            self._snapshot = _Snapshot(list(self.flow.buffers()), self._flat)
        self._last_input: Tensor | None = None
        self._graphs = cuda_graph and self.device.type == "cuda" and not compile
        self._graphed: GraphedStep | None = None
        self._beta = torch.ones((), device=self.device)  # reverse KL's inverse temperature, for a graph to read
        self.graph_refused: str | None = None  # why steps are not a CUDA graph here, once one was tried
        self.steps_as_graph = False  # whether the last step replayed a CUDA graph (`graphed.py`)
        self._initialize()

    def adopt_history(self, previous: Trainer) -> None:
        """Carry on `previous`'s curve (step count, losses, evaluations): the same problem, rebuilt."""
        self.step_count, self.losses, self.evaluations = previous.step_count, previous.losses, previous.evaluations

    def retune(self, spec: ExperimentSpec) -> None:
        """Take `spec`'s training settings (learning rate, batch size, clipping, annealing) without
        rebuilding: the model, Adam's moments and the step count carry on. The target and the
        objective must be the same; changing those needs a new Trainer."""
        if spec.target != self.spec.target or spec.training.objective != self.objective:
            raise ValueError("retune keeps the target and objective; build a new Trainer to change them")
        if spec.training.test_size != self.settings.test_size:
            self.test_points = self.target.held_out(spec.training.test_size, spec.seed).to(self.device)
            self._test_log_p = None
        self.spec = spec
        self.settings = spec.training
        if self.optimizer is not None:
            self.optimizer.lr = self.settings.learning_rate

    # -- the whole training state ---------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything that makes the next step what it would be: the weights, Adam's moments, the
        batch stream's generator, and the curve so far (step count, every loss, every evaluation).
        Tensors, lists and dicts only, on the CPU, so `torch.load(weights_only=True)` reads it back.

        Example:
            >>> spec = ExperimentSpec.from_dict({"layers": [{"type": "affine_coupling"}]})
            >>> trained = Trainer(spec); _ = trained.run(20)
            >>> again = Trainer(spec); again.load_training_state(trained.training_state())
            >>> again.step_count, again.step() == trained.step()   # the same next step, bit for bit
            (20, True)
        """
        optimizer = self.optimizer.state if self.optimizer is not None else {}
        moments = [optimizer.get(p, {}) for p in self._parameters]
        return {
            "flow": {key: value.detach().cpu().clone() for key, value in self.flow.state_dict().items()},
            "step": torch.tensor(self.step_count, dtype=torch.int64),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "evaluations": torch.tensor([_evaluation_row(e) for e in self.evaluations], dtype=torch.float64)
            .reshape(-1, len(EVALUATION_FIELDS)),
            "adam": [{key: value.detach().cpu().clone() for key, value in m.items()} for m in moments],
            "generator": self.generator.get_state(),
        }

    def load_training_state(self, state: Any) -> None:
        """Carry on from `training_state()`'s output (of a trainer of the same spec). Everything is
        checked before anything is set: ValueError, naming the part, for a state of another model or
        with non-finite values; this trainer is then unchanged."""
        if not isinstance(state, dict):
            raise ValueError("the training state is not a dictionary")  # noqa: TRY004 (documented ValueError)
        flow = _tensors(state.get("flow"), "the weights")
        own = self.flow.state_dict()
        if set(flow) != set(own):
            raise ValueError("the weights are of another model: its layers are not this experiment's")
        for key, value in flow.items():
            if value.shape != own[key].shape or value.dtype != own[key].dtype:
                raise ValueError(f"the weights are of another model: {key} is {tuple(value.shape)}, "
                                 f"this experiment's is {tuple(own[key].shape)}")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"the weights hold non-finite values ({key})")
        step = state.get("step")
        if not (isinstance(step, Tensor) and step.dtype == torch.int64 and step.numel() == 1 and int(step) >= 0):
            raise ValueError("the step count is missing or not a whole number")
        losses, evaluations = state.get("losses"), state.get("evaluations")
        if not (isinstance(losses, Tensor) and losses.dtype == torch.float64 and losses.dim() == 1
                and len(losses) == int(step)):
            raise ValueError("the loss curve is missing or does not have one loss per step")
        if not (isinstance(evaluations, Tensor) and evaluations.dtype == torch.float64
                and evaluations.dim() == 2 and evaluations.shape[1] == len(EVALUATION_FIELDS)):
            raise ValueError("the evaluations are missing or of another shape")
        adam = state.get("adam")
        if not isinstance(adam, list) or len(adam) != len(self._parameters):
            raise ValueError("Adam's moments are missing or are for another number of parameters")
        for parameter, moments in zip(self._parameters, adam):
            moments = _tensors(moments, "Adam's moments")
            if moments and set(moments) != {"step", "exp_avg", "exp_avg_sq"}:
                raise ValueError("Adam's moments are incomplete or hold unknown entries")
            for key, value in moments.items():
                # What Adam's own step would make of them: the parameter's shape and dtype, finite, a
                # step count that is one non-negative number (fused Adam fails on anything else)
                shape, dtype = ((), torch.float32) if key == "step" else (parameter.shape, parameter.dtype)
                if value.shape != shape or value.dtype != dtype or not bool(torch.isfinite(value).all()) or (
                        key == "step" and float(value) < 0):
                    raise ValueError(f"Adam's {key} does not fit the model's parameters")
        generator = state.get("generator")
        probe = torch.Generator()
        try:
            probe.set_state(generator)
        except (TypeError, RuntimeError):
            raise ValueError("the random stream's state is missing or damaged") from None

        self.flow.load_state_dict(flow)
        if self.optimizer is not None:
            self.optimizer.load(adam)
            self._graphed = None  # (it wrote the moments it was captured with, which `load` replaced)
        self.generator.set_state(generator)
        self.step_count = int(step)
        self.losses = losses.tolist()
        self.evaluations = [_evaluation_from_row(row) for row in evaluations.tolist()]

    # -- one step ----------------------------------------------------------------------------------
    def _initialize(self) -> None:
        """Run one batch through the model in training mode so data-dependent layers (ActNorm) set
        themselves from data before the first gradient step."""
        self.flow.train()
        with torch.no_grad():
            self._loss(eager=True)  # a no-grad call would cost a second compile

    def _loss(self, eager: bool = False) -> Tensor:
        if self.objective == "flow_matching":
            return self._flow_matching_loss(self.settings.batch_size)
        batch = self._draw()
        self._last_input = batch
        return self._loss_on(batch, self.inverse_temperature(), eager)

    def _draw(self) -> Tensor:
        """A step's batch: target samples (forward KL) or base samples (reverse KL)."""
        n = self.settings.batch_size
        if self.objective == "forward_kl":
            return self.target.sample(n, self.generator).to(self.device)
        return self.flow.base.sample(n, self.generator)

    def _loss_on(self, batch: Tensor, beta: float | Tensor, eager: bool = False) -> Tensor:
        """The loss of a batch `_draw` made; β weighs the energy under reverse KL (a tensor in a CUDA
        graph, which the step fills before each replay)."""
        log_prob, push = (self.flow.log_prob, self.flow.forward) if eager else (self._log_prob, self._push)
        if self.objective == "forward_kl":
            return -log_prob(batch).mean()
        x, ladj = push(batch)
        return (self.flow.base.log_prob(batch) - ladj + beta * self.target.energy(x)).mean()

    def _flow_matching_loss(self, n: int) -> Tensor:
        x1 = self.target.sample(n, self.generator).to(self.device)
        with torch.no_grad():
            x0 = self.flow.base.sample(n, self.generator).to(self.device, x1.dtype)
        if self.settings.pairing == "optimal_transport":
            x0 = x0[optimal_pairs(x0, x1)]
        t = torch.rand(n, generator=self.generator).to(self.device, x1.dtype)
        xt = torch.lerp(x0, x1, t[:, None])
        self._last_input = xt
        (_, cnf), = self.flow.active()  # the spec allows flow matching on one cnf layer only
        return (cnf.velocity(xt, t) - (x1 - x0)).square().sum(-1).mean()

    def inverse_temperature(self) -> float:
        """β in E_q[ln q + β U], raised linearly from 0.01 to 1 over `anneal_steps` (Rezende &
        Mohamed 2015, Sec. 6.1): early on q stays broad, so reverse KL does not lock onto one mode."""
        anneal = self.settings.anneal_steps
        return 1.0 if anneal == 0 else min(1.0, 0.01 + self.step_count / anneal)

    def step(self) -> float:
        """One optimiser step; returns the loss. Raises TrainingDiverged (model restored)."""
        if not self.flow.training:  # (a walk over every module: 8% of a small flow's step, were it done each step)
            self.flow.train()
        self.steps_as_graph = False
        if self._graphs and self._graph_fits():
            graphed = self._graphed_step()
            if graphed is not None:
                self.steps_as_graph = True
                return graphed
        self._snapshot.save()
        loss = self._loss()
        if not torch.isfinite(loss):
            raise self._reject(Stage.LOSS)
        if self.optimizer is None:
            return self._record(loss)
        self.optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in self._parameters if p.grad is not None]
        flat_grad = _flat(grads) if grads else None
        norm = float(torch.linalg.vector_norm(flat_grad)) if grads else 0.0
        if not math.isfinite(norm):
            raise self._reject(Stage.GRADIENT)
        self.last_grad_norm = norm  # before clipping: what the step explanation shows
        clip = self.settings.grad_clip
        if 0 < clip < norm:  # as torch.nn.utils.clip_grad_norm_ scales
            torch._foreach_mul_([*grads, flat_grad], clip / (norm + 1e-6))
        self.optimizer.step(flat_grad if len(grads) == len(self._parameters) else None)
        if not (bool(torch.isfinite(self._flat).all()) if self._flat is not None else _all_finite(self._parameters)):
            self.optimizer.reset()  # its moments were updated from the bad step too
            raise self._reject(Stage.PARAMETERS)
        return self._record(loss)

    def _graph_fits(self) -> bool:
        """Whether this step can be the graph: an objective whose batch is drawn outside it, every layer
        switched on (the app switches one off in place, which changes what a step computes), and Adam
        updating every weight as one vector (not so once a layer has missed steps: its counts lag)."""
        return (self.optimizer is not None and all(self.flow.enabled) and self.optimizer.takes_one_kernel() and (
            self.objective == "forward_kl" or (self.objective == "reverse_kl" and not self.flow.base.learnable)))

    def _graphed_step(self) -> float | None:
        """The step as a CUDA graph (captured at the first step and again when the batch size,
        learning rate or clipping changes); None where it cannot be one (the eager step then runs).
        Its batch is drawn outside the graph: target samples (forward KL), or base samples (reverse
        KL, from a fixed base, which has no weights in them to train)."""
        drawn_from = self.generator.get_state()
        batch = self._draw()
        if self.objective == "reverse_kl":
            self._beta.fill_(self.inverse_temperature())
        key = (tuple(batch.shape), self.optimizer.lr, self.settings.grad_clip)
        if self._graphed is None or self._graphed.key != key:
            self._graphed = None
            self._snapshot.save()  # (the capture's warm-up passes move BatchNorm's running statistics)
            try:
                self._graphed = GraphedStep(lambda drawn: self._loss_on(drawn, self._beta, eager=True), self._parameters,
                                            self._flat, self.optimizer, batch, self.settings.grad_clip)
            except Exception as error:  # noqa: BLE001 - any layer the capture refuses trains eagerly
                self._graphs, self.graph_refused = False, f"{type(error).__name__}: {error}"
                torch.cuda.synchronize(self.device)
                self.generator.set_state(drawn_from)  # (the eager step draws this batch again)
                return None
            finally:
                self._snapshot.restore()
        self._snapshot.save()
        loss, norm, finite = self._graphed(batch)
        self._last_input = self._graphed.input
        if not (math.isfinite(loss) and math.isfinite(norm)):
            # The eager step rejects these before its update: undo the graph's before looking for the culprit.
            self._snapshot.restore()
            self._graphed.restore_moments()
            raise self._reject(Stage.LOSS if not math.isfinite(loss) else Stage.GRADIENT)
        self.last_grad_norm = norm
        if not finite:
            self.optimizer.reset()
            self._graphed = None  # (captured with the moments `reset` forgot)
            raise self._reject(Stage.PARAMETERS)
        return self._record(loss)

    def _record(self, loss: Tensor | float) -> float:
        self.step_count += 1
        value = loss if isinstance(loss, float) else loss.item()
        self.losses.append(value)
        return value

    def _reject(self, stage: Stage) -> TrainingDiverged:
        culprit = self._first_nonfinite_layer(stage)
        self._snapshot.restore()
        if self.optimizer is not None:
            self.optimizer.zero_grad()
        if culprit is None:
            position, title = None, "base"
        else:
            position, title = culprit, self.flow.layers[culprit].info.title
        return TrainingDiverged(self.step_count + 1, position, title, stage, self.settings.learning_rate)

    def _first_nonfinite_layer(self, stage: Stage) -> int | None:
        """Walk the failed batch through the layers in the direction training used."""
        active = self.flow.active()
        if stage is Stage.PARAMETERS:
            for position, layer in active:
                if list(layer.parameters()) and not _all_finite(list(layer.parameters())):
                    return position
        if stage is Stage.GRADIENT:
            order = active if self.objective == "reverse_kl" else reversed(active)
            for position, layer in order:
                if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in layer.parameters()):
                    return position
        points = self._last_input
        with torch.no_grad():
            if self.objective != "reverse_kl":  # data-side points: walk them towards the base
                for position, layer in reversed(active):
                    points, ladj = layer.inverse(points)
                    if not (torch.isfinite(points).all() and torch.isfinite(ladj).all()):
                        return position
            else:
                for position, layer in active:
                    points, ladj = layer(points)
                    if not (torch.isfinite(points).all() and torch.isfinite(ladj).all()):
                        return position
        return None  # every layer was finite: the base density was not (a point outside its support)

    # -- evaluation ---------------------------------------------------------------------------------
    def _q_generator(self) -> torch.Generator:
        """The stream of q's evaluation samples (reverse KL): the same points at every evaluation."""
        return torch.Generator().manual_seed(self.spec.seed + 104_729)

    def kl_by_depth(self, flow: Flow | None = None, points: int | None = None) -> list[float] | None:
        """The true KL after every layer, k = 0..K (None where p is unknown), in the direction of the
        reported KL and from the same evaluation points (the first `points` of them, if given): with
        all of them the last value is what `evaluate` reports. `flow`: a copy of this trainer's flow
        (the views' own, with continuous layers opened into time slices), by default the flow itself."""
        if not self.target.info.exact_density:
            return None
        flow = self.flow if flow is None else flow
        n = self.settings.test_size if points is None else min(points, self.settings.test_size)
        if self.objective == "reverse_kl":
            return kl_by_depth(flow, self.target, True, flow.base.sample(n, self._q_generator()))
        return kl_by_depth(flow, self.target, False, self.test_points[:n], self.test_log_p()[:n])

    def test_log_p(self) -> Tensor:
        """The target's exact ln p at `test_points`, computed once: the held-out points stay the same, and
        some densities cost more than the flow (moons: a quadrature over 1000 knots per point)."""
        if self._test_log_p is None:
            with torch.no_grad():
                self._test_log_p = self.target.log_prob(self.test_points)
        return self._test_log_p

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """Held-out NLL (nats) and, where the target density is known, the true KL (nats)."""
        with self.flow.evaluating():
            log_q = self.flow.log_prob(self.test_points)
            test_nll = float(-log_q.mean())
            kl = ess = log_z = log_z_se = None
            if self.target.info.exact_density:
                if self.objective != "reverse_kl":
                    log_w = self.test_log_p() - log_q  # ln p / q at samples of p
                    kl, ess = float(log_w.mean()), forward_ess(log_w)
                else:
                    x, log_qx = self.flow.sample_and_log_prob(self.settings.test_size, self._q_generator())
                    log_w = -self.target.energy(x) - log_qx  # ln p̃ / q at samples of q
                    kl = self.target.log_z - float(log_w.mean())
                    fit = importance(log_w)
                    ess, log_z, log_z_se = fit.ess, fit.log_z, fit.log_z_se
        evaluation = Evaluation(self.step_count, test_nll, kl, ess, log_z, log_z_se)
        self.evaluations.append(evaluation)
        return evaluation

    # -- headless runs ------------------------------------------------------------------------------
    def run(self, steps: int | None = None, progress: Callable[[int, float, Evaluation | None], None] | None = None) -> dict[str, Any]:
        """Train `steps` steps (default: the spec's), evaluating every `eval_every` and at the end.
        Returns the final metrics; `seconds` counts training steps only, not evaluations."""
        steps = self.settings.steps if steps is None else steps
        every = self.settings.eval_every
        seconds = 0.0
        evaluation = None
        for i in range(steps):
            start = time.perf_counter()
            loss = self.step()
            seconds += time.perf_counter() - start
            evaluation = self.evaluate() if (i + 1) % every == 0 or i + 1 == steps else None
            if progress is not None:
                progress(self.step_count, loss, evaluation)
        if evaluation is None:
            evaluation = self.evaluate()
        recent = self.losses[-50:]
        loss = sum(recent) / len(recent) if recent else math.nan
        by_depth = self.kl_by_depth()
        return {
            "steps": self.step_count,
            "seconds": round(seconds, 4),
            "steps_per_s": round(steps / seconds, 2) if seconds > 0 else None,
            "objective": self.objective,
            "loss": _finite(loss),
            "train_nll": _finite(loss) if self.objective == "forward_kl" else None,
            "test_nll": _finite(evaluation.test_nll),
            "kl": None if evaluation.kl is None else _finite(evaluation.kl),
            "kl_direction": None if evaluation.kl is None else ("q||p" if self.objective == "reverse_kl" else "p||q"),
            "ess": None if evaluation.ess is None else round(evaluation.ess, 6),
            "ess_from": None if evaluation.ess is None else ("q" if self.objective == "reverse_kl" else "p"),
            "log_z": None if evaluation.log_z is None else _finite(evaluation.log_z),
            "log_z_se": None if evaluation.log_z_se is None else _finite(evaluation.log_z_se),
            "kl_by_depth": None if by_depth is None else [_finite(value) for value in by_depth],
        }


OT_BLOCK = 128  # points per exact assignment: it costs ~n³ (1.6 ms at 128, 127 ms at 512 on this CPU)


def optimal_pairs(x0: Tensor, x1: Tensor, block: int = OT_BLOCK) -> Tensor:
    """The order of x0 that pairs x0[order][i] with x1[i] at the least total squared distance within
    each block of `block` consecutive points (an exact assignment per block, scipy's
    linear_sum_assignment; a batch's points are drawn independently, so blocks are random subsets).

    Example:
        >>> x1 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
        >>> x0 = x1[[2, 0, 1]] + 0.1
        >>> x0[optimal_pairs(x0, x1)] - x1
        tensor([[0.1000, 0.1000],
                [0.1000, 0.1000],
                [0.1000, 0.1000]])
    """
    from scipy.optimize import linear_sum_assignment  # only flow matching with pairing needs scipy

    order = torch.empty(len(x0), dtype=torch.long)
    for start in range(0, len(x0), block):
        stop = min(start + block, len(x0))
        cost = torch.cdist(x0[start:stop].double(), x1[start:stop].double()).square().cpu().numpy()
        rows, columns = linear_sum_assignment(cost)
        order[start + torch.as_tensor(columns)] = start + torch.as_tensor(rows)
    return order.to(x0.device)
