"""Saved models: weights plus the spec that built them, in a file `torch.load(weights_only=True)`
can read safely (tensors, strings and dicts only; nothing is unpickled)."""

from __future__ import annotations

from pathlib import Path

import torch

from flowviz.core.build import build_flow
from flowviz.core.flow import Flow
from flowviz.core.spec import ExperimentSpec

FORMAT = "flowviz-model"
FORMAT_VERSION = 1


def save_model(path: str | Path, flow: Flow, spec: ExperimentSpec, step: int = 0) -> None:
    state = {key: value.detach().cpu() for key, value in flow.state_dict().items()}
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_json(), "step": step, "state_dict": state}, path)


def load_model(path: str | Path) -> tuple[Flow, ExperimentSpec, int]:
    """(flow, spec, step) from a saved model; raises ValueError with the reason on a bad file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or corrupt files
        raise ValueError(f"{path} is not a flowviz model file that loads safely: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a flowviz model file")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has model format version {data.get('version')!r}; this flowviz reads {FORMAT_VERSION}")
    spec = ExperimentSpec.from_json(data["spec"])
    flow = build_flow(spec)
    try:
        flow.load_state_dict(data["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not match the spec's layers ({error})") from None
    return flow, spec, int(data.get("step", 0))
