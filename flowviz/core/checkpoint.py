"""Saved models: weights plus the spec that built them, in a file `torch.load(weights_only=True)`
can read safely (tensors, strings and dicts only; nothing is unpickled).

`save_model` writes a file and `model_bytes` returns the same content as bytes (for a download);
`load_model` reads either, from a path, bytes or a binary file object."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import torch

from flowviz.core.build import build_flow
from flowviz.core.flow import Flow
from flowviz.core.spec import ExperimentSpec

FORMAT = "flowviz-model"
FORMAT_VERSION = 1


def _payload(flow: Flow, spec: ExperimentSpec, step: int) -> dict:
    state = {key: value.detach().cpu() for key, value in flow.state_dict().items()}
    return {"format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_json(), "step": int(step), "state_dict": state}


def save_model(path: str | Path, flow: Flow, spec: ExperimentSpec, step: int = 0) -> None:
    torch.save(_payload(flow, spec, step), path)


def model_bytes(flow: Flow, spec: ExperimentSpec, steps: int = 0) -> bytes:
    """What `save_model` writes, as bytes; `steps` is the number of training steps taken."""
    buffer = io.BytesIO()
    torch.save(_payload(flow, spec, steps), buffer)
    return buffer.getvalue()


def load_model(source: str | Path | bytes | BinaryIO) -> tuple[Flow, ExperimentSpec, int]:
    """(flow, spec, step) from a saved model (a path, the bytes of one, or a binary file object);
    raises ValueError with the reason on a bad file."""
    name = str(source) if isinstance(source, (str, Path)) else "the model file"
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many types for foreign or corrupt files)
        raise ValueError(f"{name} is not a flowviz model file that loads safely: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{name} is not a flowviz model file")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{name} has model format version {data.get('version')!r}; this flowviz reads {FORMAT_VERSION}")
    if not isinstance(data.get("spec"), str):
        raise ValueError(f"{name} holds no spec")  # noqa: TRY004 (a bad file, not a bad argument: documented ValueError)
    spec = ExperimentSpec.from_json(data["spec"])  # a SpecError (a ValueError) names the bad field
    flow = build_flow(spec)
    try:
        flow.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{name}: the weights do not match the spec's layers ({error})") from None
    return flow, spec, int(data.get("step", 0))
