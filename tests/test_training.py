"""Training: the objectives reach the target, the reported KL is the true one, faults are contained."""

from __future__ import annotations

import copy
import math
import shutil
import statistics

import pytest
import torch

from flowviz.core.devices import available_devices, resolve_device
from flowviz.core.layers import LAYERS
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer, TrainingDiverged, optimal_pairs
from tests.test_densities import grid


def spec_of(**parts) -> ExperimentSpec:
    return ExperimentSpec.from_dict(parts)


def alternating(kind: str, count: int, **settings) -> list[dict]:
    return [{"type": kind, "settings": {"transformed": "z2" if i % 2 == 0 else "z1", **settings}} for i in range(count)]


def test_spline_coupling_fits_8gaussians_below_005_nats():
    spec = spec_of(target={"name": "8gaussians"}, layers=alternating("spline_coupling", 4),
                   training={"learning_rate": 1e-3, "eval_every": 10_000})
    metrics = Trainer(spec).run(1500)  # seeds 0-2 reach 0.023-0.034 nats
    assert metrics["kl"] < 0.05, metrics


def test_planar_16_fits_u1_below_01_nats_by_reverse_kl():
    spec = spec_of(target={"name": "u1"}, layers=[{"type": "planar"}] * 16,
                   training={"objective": "reverse_kl", "learning_rate": 1e-2, "anneal_steps": 500, "eval_every": 10_000})
    metrics = Trainer(spec).run(1500)
    assert metrics["kl"] < 0.1, metrics
    assert metrics["kl_direction"] == "q||p"


def test_forward_kl_is_the_true_kl():
    """With no layers q is the base; KL(p‖N(0, I)) for 8 Gaussians by quadrature."""
    trainer = Trainer(spec_of(target={"name": "8gaussians"}, training={"test_size": 16_384}))
    points, h = grid(7.0, 700)
    p_log = trainer.target.log_prob(points.float()).double()
    q_log = -0.5 * (points**2).sum(-1) - math.log(2 * math.pi)
    exact = float((p_log.exp() * (p_log - q_log)).sum() * h * h)
    evaluation = trainer.evaluate()
    assert evaluation.kl == pytest.approx(exact, abs=0.05)
    trainer.step()  # nothing to learn: the step only measures the loss
    assert trainer.step_count == 1 and trainer.losses[0] == pytest.approx(exact + trainer.target.info.entropy, abs=0.3)


def test_reverse_kl_is_the_true_kl_including_log_z():
    trainer = Trainer(spec_of(target={"name": "u2"}, training={"objective": "reverse_kl", "test_size": 16_384}))
    points, h = grid(8.0, 800)
    q_log = -0.5 * (points**2).sum(-1) - math.log(2 * math.pi)
    p_log = trainer.target.log_prob(points.float()).double()
    exact = float((q_log.exp() * (q_log - p_log)).sum() * h * h)
    # U2 varies a lot under q: allow four Monte Carlo standard errors of the 16384-sample estimate.
    with torch.no_grad():
        x, log_qx = trainer.flow.sample_and_log_prob(16_384, torch.Generator().manual_seed(1))
        spread = float((log_qx + trainer.target.energy(x)).std()) / math.sqrt(16_384)
    assert trainer.evaluate().kl == pytest.approx(exact, abs=4 * spread)


def test_training_is_reproducible_from_the_seed():
    spec = spec_of(seed=3, target={"name": "rings"}, layers=alternating("affine_coupling", 2, hidden=16))
    a, b = Trainer(spec), Trainer(spec)
    assert [a.step() for _ in range(5)] == [b.step() for _ in range(5)]
    c = Trainer(spec.replace(seed=4))
    assert [c.step() for _ in range(5)] != a.losses[:5]


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]  # (on cuda the steps are a CUDA graph)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", DEVICES)
def test_non_finite_loss_is_rejected_and_names_the_layer(device):
    spec = spec_of(target={"name": "moons"}, layers=alternating("affine_coupling", 3, hidden=8))
    trainer = Trainer(spec, device)
    for _ in range(3):
        trainer.step()
    with torch.no_grad():
        trainer.flow.layers[1].net[-1].bias.fill_(float("nan"))  # layer 2 now poisons its outputs
    before = {k: v.clone() for k, v in trainer.flow.state_dict().items()}
    moments = [{k: v.clone() for k, v in m.items()} for m in trainer.optimizer.state.values()]
    with pytest.raises(TrainingDiverged) as caught:
        trainer.step()
    assert caught.value.layer_position == 1
    assert "layer 2 (RealNVP affine coupling)" in str(caught.value) and "learning rate" in str(caught.value)
    after = trainer.flow.state_dict()
    assert all(torch.equal(before[k], after[k]) or (before[k].isnan() == after[k].isnan()).all() for k in before)
    assert all(torch.equal(m[k], now[k]) for m, now in zip(moments, trainer.optimizer.state.values()) for k in m)
    assert trainer.step_count == 3


@pytest.mark.parametrize("device", DEVICES)
def test_a_huge_learning_rate_never_leaves_non_finite_parameters(device):
    spec = spec_of(target={"name": "checkerboard"}, layers=alternating("affine_coupling", 4, hidden=16),
                   training={"learning_rate": 10.0})
    trainer = Trainer(spec, device)
    diverged = None
    for _ in range(200):
        try:
            trainer.step()
        except TrainingDiverged as error:
            diverged = error
            break
    for p in trainer.flow.parameters():
        assert torch.isfinite(p).all()
    if diverged is not None:
        assert "restored" in str(diverged)


def test_actnorm_is_initialised_from_data_before_the_first_step():
    spec = spec_of(target={"name": "8gaussians"}, layers=[{"type": "actnorm"}])
    trainer = Trainer(spec)
    layer = trainer.flow.layers[0]
    assert bool(layer.initialized)
    z, _ = layer.inverse(trainer.target.sample(20_000, torch.Generator().manual_seed(9)))
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=0.05, rtol=0)


def test_actnorm_loaded_uninitialised_is_initialised_from_its_next_training_batch():
    layer = LAYERS["actnorm"]()
    layer.inverse(torch.randn(500, 2))  # initialised from this batch
    layer.load_state_dict(LAYERS["actnorm"]().state_dict())  # a fresh layer's: not initialised
    data = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(4)) * torch.tensor([3.0, 0.5]) + 2.0
    z, _ = layer.inverse(data)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=1e-3, rtol=0)


def test_learnable_base_trains_with_the_flow():
    spec = spec_of(target={"name": "8gaussians"}, base={"name": "gaussian_mixture", "learnable": True, "settings": {"components": 8}},
                   training={"learning_rate": 0.05})
    trainer = Trainer(spec)
    before = trainer.flow.base.loc.detach().clone()
    first = trainer.evaluate().test_nll
    trainer.run(150)
    assert not torch.equal(before, trainer.flow.base.loc)
    assert trainer.evaluations[-1].test_nll < first - 0.3


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="available: cpu"):
        resolve_device("cuda:7" if not torch.cuda.is_available() else "cuda:99")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    assert available_devices()[0] == "cpu"


@needs_cuda
def test_cuda_training_matches_cpu():
    spec = spec_of(seed=1, target={"name": "moons"}, layers=alternating("spline_coupling", 2, hidden=16))
    cpu, cuda = Trainer(spec, "cpu"), Trainer(spec, "cuda")
    losses_cpu = [cpu.step() for _ in range(5)]
    losses_cuda = [cuda.step() for _ in range(5)]
    assert losses_cuda == pytest.approx(losses_cpu, rel=1e-3)
    assert cuda.evaluate().kl == pytest.approx(cpu.evaluate().kl, abs=1e-3)


@needs_cuda
@pytest.mark.parametrize("kind, clip", [("affine_coupling", 0.0), ("spline_coupling", 0.0), ("affine_coupling", 0.05)])
def test_cuda_graph_steps_are_the_eager_steps(kind, clip):
    spec = spec_of(seed=2, target={"name": "moons"}, layers=alternating(kind, 4, hidden=32),
                   training={"grad_clip": clip, "batch_size": 256})
    graphed, eager = Trainer(spec, "cuda"), Trainer(spec, "cuda", cuda_graph=False)
    first = [[trainer.step() for _ in range(20)] for trainer in (graphed, eager)]
    assert graphed.steps_as_graph and graphed.graph_refused is None and not eager.steps_as_graph
    retuned = spec_of(seed=2, target={"name": "moons"}, layers=alternating(kind, 4, hidden=32),
                      training={"grad_clip": clip, "batch_size": 128, "learning_rate": 3e-3})
    for trainer in (graphed, eager):
        trainer.retune(retuned)  # a new graph: another batch size and learning rate
    then = [[trainer.step() for _ in range(20)] for trainer in (graphed, eager)]
    assert graphed.steps_as_graph
    assert first[0] == pytest.approx(first[1], rel=1e-5) and then[0] == pytest.approx(then[1], rel=1e-4)
    assert graphed.last_grad_norm == pytest.approx(eager.last_grad_norm, rel=1e-3)
    torch.testing.assert_close(graphed.flow.state_dict(), eager.flow.state_dict(), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(graphed.training_state()["adam"], eager.training_state()["adam"], rtol=1e-3, atol=1e-6)


@needs_cuda
def test_reverse_kl_steps_as_a_cuda_graph_are_the_eager_steps():
    # A fixed base's samples are drawn outside the graph, and the annealed β is read from a tensor.
    def spec(learnable: bool) -> ExperimentSpec:
        return spec_of(seed=1, target={"name": "u1"}, layers=[{"type": "planar"}] * 4,
                       base={"name": "diagonal_normal", "learnable": learnable},
                       training={"objective": "reverse_kl", "anneal_steps": 10, "learning_rate": 1e-2})
    graphed, eager = Trainer(spec(False), "cuda"), Trainer(spec(False), "cuda", cuda_graph=False)
    losses = [[t.step() for _ in range(20)] for t in (graphed, eager)]
    assert graphed.steps_as_graph and losses[0] == pytest.approx(losses[1], rel=1e-5)
    learning_base = Trainer(spec(True), "cuda")  # its samples carry the weights it learns: eager steps
    learning_base.run(3)
    assert not learning_base.steps_as_graph and learning_base.graph_refused is None


@needs_cuda
def test_a_step_that_cannot_be_a_cuda_graph_is_taken_eagerly():
    # A planar layer's density inverts it iteratively, asking the device whether it has converged.
    spec = spec_of(target={"name": "moons"}, layers=[{"type": "planar"}] * 3)
    trainer, eager = Trainer(spec, "cuda"), Trainer(spec, "cuda", cuda_graph=False)
    losses = [[t.step() for _ in range(5)] for t in (trainer, eager)]
    assert not trainer.steps_as_graph and trainer.graph_refused
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@needs_cuda
def test_a_cuda_graph_trainer_carries_on_from_a_kept_state():
    spec = spec_of(seed=3, target={"name": "8gaussians"}, layers=alternating("affine_coupling", 2, hidden=16))
    trained = Trainer(spec, "cuda")
    trained.run(10)
    again = Trainer(spec, "cuda")
    again.step()  # (captured with moments that loading replaces)
    again.load_training_state(trained.training_state())
    assert [again.step() for _ in range(3)] == pytest.approx([trained.step() for _ in range(3)], rel=1e-5)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on a CPU needs g++")
@pytest.mark.parametrize("objective, target", [("forward_kl", "moons"), ("reverse_kl", "u2")])
def test_a_compiled_trainer_takes_the_steps_an_eager_one_takes(objective, target):
    layers = alternating("affine_coupling", 2, hidden=16) + [{"type": "spline_coupling", "settings": {"hidden": 16}}]
    spec = spec_of(target={"name": target}, layers=layers, training={"objective": objective, "batch_size": 128})
    eager, compiled = Trainer(spec), Trainer(spec, compile=True)
    assert compiled.compiled
    assert [compiled.step() for _ in range(5)] == pytest.approx([eager.step() for _ in range(5)], rel=1e-4)
    for a, b in zip(eager.flow.parameters(), compiled.flow.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_compiling_without_a_compiler_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="install g\\+\\+"):
        Trainer(spec_of(layers=alternating("affine_coupling", 1, hidden=8)), compile=True)


def plain_adam_twin(trainer: Trainer) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Generator]:
    """The trainer's model, a textbook Adam (torch's for-loop implementation, not fused) and the
    same data stream, advanced past the batch the trainer's ActNorm start consumed."""
    flow = copy.deepcopy(trainer.flow)
    generator = torch.Generator().manual_seed(trainer.spec.seed)
    trainer.target.sample(trainer.settings.batch_size, generator)
    return flow, torch.optim.Adam(flow.parameters(), lr=trainer.settings.learning_rate, foreach=False), generator


def plain_adam_step(flow, adam, generator, trainer: Trainer) -> float:
    loss = -flow.log_prob(trainer.target.sample(trainer.settings.batch_size, generator)).mean()
    adam.zero_grad()
    loss.backward()
    adam.step()
    return loss.item()


NSF_8GAUSSIANS = spec_of(target={"name": "8gaussians"}, layers=alternating("spline_coupling", 2, hidden=32),
                         training={"learning_rate": 3e-3, "batch_size": 256, "test_size": 2048})


def test_a_trainer_step_is_a_plain_adam_step():
    """Fused Adam on one vector, the snapshot and the finiteness guard change no number: ten steps land where a
    textbook loop lands, to float rounding (the two part by chaos only after ~20 steps)."""
    trainer = Trainer(NSF_8GAUSSIANS)
    twin = plain_adam_twin(trainer)
    for _ in range(10):
        assert trainer.step() == pytest.approx(plain_adam_step(*twin, trainer), abs=1e-5)
    for ours, theirs in zip(trainer.flow.parameters(), twin[0].parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_a_layer_switched_off_while_training_keeps_its_weights_and_adam_its_moments(device):
    """A switched-off layer gets no gradient, so Adam must leave it be: its moments from the steps
    before would otherwise go on moving it. Switched on again, it trains on from where it stood.
    (On cuda the first steps are a CUDA graph, which computed every layer when it was captured.)"""
    trainer = Trainer(spec_of(target={"name": "moons"}, layers=alternating("affine_coupling", 2, hidden=8)), device)
    trainer.run(5)
    assert trainer.steps_as_graph == (device == "cuda")
    off = trainer.flow.layers[1]
    before = [p.detach().clone() for p in off.parameters()]
    trainer.flow.enabled = [True, False]  # what the app does when a layer is switched off
    trainer.run(5)
    assert all(torch.equal(p, b) for p, b in zip(off.parameters(), before))
    trainer.flow.enabled = [True, True]
    trainer.run(2)
    assert not all(torch.equal(p, b) for p, b in zip(off.parameters(), before))
    assert trainer.training_state()["adam"][0]["step"] == 12 and trainer.training_state()["adam"][-1]["step"] == 7


def test_the_fit_at_equal_steps_is_a_plain_adam_loops_over_seeds():
    """Issue 14's reported gap (fused Adam 0.20 nats against 0.146) as a property: over six seeds the
    median KL after 300 steps is within 0.03 nats of a textbook loop's on the same model and data.
    Single seeds part by up to 0.18 (seed 2 of the loop misses a mode): a trajectory amplifies a
    1e-9 difference in one parameter to 1e-2 by step 50, which is why the test compares medians."""
    ours, theirs = [], []
    for seed in range(6):
        trainer = Trainer(NSF_8GAUSSIANS.replace(seed=seed))
        twin = plain_adam_twin(trainer)
        for _ in range(300):
            trainer.step()
            plain_adam_step(*twin, trainer)
        ours.append(trainer.evaluate().kl)
        flow = twin[0].eval()
        with torch.no_grad():
            theirs.append(float((trainer.target.log_prob(trainer.test_points) - flow.log_prob(trainer.test_points)).mean()))
    assert abs(statistics.median(ours) - statistics.median(theirs)) < 0.03, (ours, theirs)


def flow_matching_spec(pairing: str = "independent", steps: int = 16) -> ExperimentSpec:
    return ExperimentSpec.from_dict({
        "seed": 3, "target": {"name": "8gaussians"},
        "layers": [{"type": "cnf", "settings": {"solver": "euler", "steps": steps, "hidden": 32, "contraction": 0.9}}],
        "training": {"objective": "flow_matching", "pairing": pairing, "learning_rate": 5e-3, "batch_size": 256,
                     "test_size": 2048}})


@pytest.mark.slow
@pytest.mark.parametrize("pairing", ["independent", "optimal_transport"])
def test_flow_matching_fits_the_solved_maps_exact_density(pairing):
    """Flow matching regresses v alone; the KL it reports is the solved map's, exactly: the same as
    ln p - ln q of the held-out points through the layer's own inverse."""
    trainer = Trainer(flow_matching_spec(pairing))
    before = trainer.evaluate().kl
    trainer.run(600)
    after = trainer.evaluate()
    assert after.kl < 0.5 * before, (before, after.kl)
    with torch.no_grad(), trainer.flow.evaluating():
        points = trainer.test_points
        independent = float((trainer.target.log_prob(points) - trainer.flow.log_prob(points)).mean())
    assert after.kl == pytest.approx(independent, abs=1e-6)


def test_flow_matching_trains_only_the_velocity_of_the_cnf():
    trainer = Trainer(flow_matching_spec())
    before = {name: p.detach().clone() for name, p in trainer.flow.named_parameters()}
    for _ in range(3):
        trainer.step()
    moved = {name for name, p in trainer.flow.named_parameters() if not torch.equal(p, before[name])}
    assert moved and all(name.startswith("layers.0.field.") for name in moved)


def test_optimal_pairs_are_a_permutation_at_the_least_total_cost():
    import itertools

    generator = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 2, generator=generator), torch.randn(6, 2, generator=generator) * 3
    order = optimal_pairs(x0, x1)
    assert sorted(order.tolist()) == list(range(6))
    cost = float((x0[order] - x1).square().sum())
    best = min(float((x0[list(p)] - x1).square().sum()) for p in itertools.permutations(range(6)))
    assert cost == pytest.approx(best)
    blocked = optimal_pairs(x0, x1, block=4)  # two blocks: 0-3 among themselves, 4-5 among themselves
    assert sorted(blocked[:4].tolist()) == [0, 1, 2, 3] and sorted(blocked[4:].tolist()) == [4, 5]


def test_the_held_out_log_density_is_the_targets_and_follows_a_new_test_size():
    """ln p at the held-out points is computed once (moons: a quadrature per point) and must stay the
    target's own at exactly those points, also after `retune` draws another number of them."""
    spec = ExperimentSpec.from_dict({"target": {"name": "moons"}, "layers": [{"type": "affine_coupling"}],
                                     "training": {"test_size": 300}})
    trainer = Trainer(spec)
    assert torch.equal(trainer.test_log_p(), trainer.target.log_prob(trainer.test_points))
    before = trainer.evaluate().kl
    trainer.retune(ExperimentSpec.from_dict({**spec.to_dict(), "training": {**spec.to_dict()["training"], "test_size": 500}}))
    assert trainer.test_log_p().shape == (500,)
    assert torch.equal(trainer.test_log_p(), trainer.target.log_prob(trainer.test_points))
    assert trainer.evaluate().kl != before  # from the 500 points now
    x = trainer.test_points[:200]
    with torch.no_grad():
        assert trainer.kl_by_depth(points=200)[-1] == pytest.approx(
            float((trainer.target.log_prob(x) - trainer.flow.log_prob(x)).double().mean()), abs=1e-6)
