"""Turn a validated spec into objects: the flow (base + layers) and the target."""

from __future__ import annotations

import threading

import torch

from flowviz.core.bases import Base, make_base
from flowviz.core.flow import Flow
from flowviz.core.layers import Layer, make_layer
from flowviz.core.picture import decode_picture
from flowviz.core.spec import TIME_SLICES, BaseSpec, ExperimentSpec, LayerSpec, TargetSpec
from flowviz.core.targets import TARGETS, Picture, Points, Target

# Layer initialisers draw from torch's global generator. Seeding it for a build must not interleave
# with another session's build on another thread, so builds take turns.
_BUILD_LOCK = threading.Lock()


def build_flow(spec: ExperimentSpec) -> Flow:
    """The untrained flow of `spec`, on the CPU; the same spec and seed give the same weights."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        base = make_base(spec.base.name, spec.base.settings, spec.base.learnable)
        layers = [make_layer(layer.type, layer.settings) for layer in spec.layers]
    return Flow(base, layers, [layer.enabled for layer in spec.layers])


def shown_flow(flow: Flow, spec: ExperimentSpec) -> Flow:
    """`flow` as the views show it: continuous layers opened into time slices where the spec's
    presentation says so (the same modules, not a copy)."""
    return flow.unfolded(TIME_SLICES) if spec.presentation.time_slices else flow


def build_layer(layer: LayerSpec, seed: int) -> Layer:
    """One fresh layer, seeded: what the explorer adds when a stack is edited."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_layer(layer.type, layer.settings)


def build_base(base: BaseSpec, seed: int) -> Base:
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_base(base.name, base.settings, base.learnable)


def build_target(target: TargetSpec, seed: int = 0) -> Target:
    if target.name == "points":
        return Points(torch.tensor(target.points), seed=seed, **target.settings)
    if target.image is not None:
        return Picture(**target.settings, grey=decode_picture(target.image))
    return TARGETS[target.name](**target.settings)
