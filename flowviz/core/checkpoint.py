"""Saved models: weights plus the spec that built them, in a file `torch.load(weights_only=True)`
can read safely (tensors, strings and dicts only; nothing is unpickled).

`save_model` writes a file and `model_bytes` returns the same content as bytes (for a download);
`load_model` reads either, from a path, bytes or a binary file object.

A kept session (`session_bytes`, `read_session`) is a whole training state: what a page keeps in
the browser's storage so that a reload, a closed tab or a dead server process loses at most a few
seconds of training. It is keyed by `experiment_key`: the experiment without its presentation.

Example:
    >>> spec = ExperimentSpec.from_dict({"layers": [{"type": "planar"}]})
    >>> trainer = Trainer(spec); _ = trainer.run(30)
    >>> kept = read_session(session_bytes(trainer), spec)
    >>> kept["step"].item(), len(kept["losses"])
    (30, 30)
    >>> read_session(b"PK-not-a-session", spec)
    Traceback (most recent call last):
    ...
    ValueError: the kept state is not a flowviz session that loads safely (...)
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, BinaryIO

import torch

from flowviz.core.build import build_flow
from flowviz.core.flow import Flow
from flowviz.core.spec import ExperimentSpec
from flowviz.core.training import Trainer

FORMAT = "flowviz-model"
# 2 (2026-12-03): the spline coupling evaluates its spline towards the base and inverts it to sample;
# version 1's spline weights meant the other way round. Version 1 files without one read as before.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def old_spline_problem(version: object, spec: ExperimentSpec) -> str | None:
    """Why a readable file of format `version` holding `spec`'s weights still cannot be used, or None.

    Example:
        >>> spline = ExperimentSpec.from_dict({"layers": [{"type": "spline_coupling"}]})
        >>> old_spline_problem(2, spline) is None, old_spline_problem(1, spline)[:44]
        (True, 'it was saved by a flowviz whose spline coupl')
    """
    if version == 1 and any(layer.type == "spline_coupling" for layer in spec.layers):
        return ("it was saved by a flowviz whose spline coupling ran its spline the other way (before 2026-12-03): "
                "its weights would draw another flow. Open its experiment (the spec) and train it again")
    return None


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
    if data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{name} has model format version {data.get('version')!r}; this flowviz reads {FORMAT_VERSION}")
    if not isinstance(data.get("spec"), str):
        raise ValueError(f"{name} holds no spec")  # noqa: TRY004 (a bad file, not a bad argument: documented ValueError)
    spec = ExperimentSpec.from_json(data["spec"])  # a SpecError (a ValueError) names the bad field
    if (problem := old_spline_problem(data.get("version"), spec)) is not None:
        raise ValueError(f"{name}: {problem}")
    flow = build_flow(spec)
    try:
        flow.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{name}: the weights do not match the spec's layers ({error})") from None
    return flow, spec, int(data.get("step", 0))


SESSION_FORMAT = "flowviz-session"
# A kept session larger than this is not kept, nor read back: it returns from the browser as base64 in
# one websocket message, and 12 MiB is 16 MiB as base64, under the server's 20 MiB message limit.
MAX_SESSION_BYTES = 12 * 1024 * 1024


def experiment_key(spec: ExperimentSpec) -> str:
    """What a kept session is filed under: the experiment (target, base, layers, training, view,
    seed), not how the page presents it, so projector mode or a hidden panel still finds it.

    Example:
        >>> a = ExperimentSpec.from_dict({"layers": [{"type": "planar"}]})
        >>> b = a.replace(presentation={"projector": True})
        >>> experiment_key(a) == experiment_key(b), experiment_key(a) == experiment_key(a.replace(seed=1))
        (True, False)
    """
    data = spec.to_dict()
    data.pop("presentation", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def session_bytes(trainer: Trainer) -> bytes:
    """The trainer's whole state (`Trainer.training_state`) with its spec, as bytes."""
    return state_bytes(trainer.spec, trainer.training_state())


def state_bytes(spec: ExperimentSpec, state: dict[str, Any]) -> bytes:
    """A training state (`Trainer.training_state`, a copy) of `spec`'s experiment, as `session_bytes`
    writes it: apart, so that a caller can take the copy under its lock and write it outside."""
    buffer = io.BytesIO()
    torch.save({"format": SESSION_FORMAT, "version": FORMAT_VERSION, "spec": spec.to_json(),
                "key": experiment_key(spec), "state": state}, buffer)
    return buffer.getvalue()


def read_session(content: bytes, spec: ExperimentSpec) -> dict[str, Any]:
    """The training state kept by `session_bytes`, checked to be `spec`'s experiment; ValueError
    with the reason for anything else (never unpickled: `weights_only=True`). The trainer that loads
    it (`Trainer.load_training_state`) checks every tensor against its own model."""
    if len(content) > MAX_SESSION_BYTES:
        raise ValueError(f"the kept state is {len(content) / 2**20:.1f} MiB, more than the "
                         f"{MAX_SESSION_BYTES / 2**20:.0f} MiB a kept session may have")
    try:
        data = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many types for foreign or corrupt bytes)
        raise ValueError(f"the kept state is not a flowviz session that loads safely ({str(error)[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
        raise ValueError("the kept state is not a flowviz session")
    if data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"the kept state has format version {data.get('version')!r}; this flowviz reads {FORMAT_VERSION}")
    key = experiment_key(spec)
    if data.get("key") != key or not isinstance(data.get("spec"), str):
        raise ValueError("the kept state is of another experiment than the one on this page")
    try:
        kept_spec = ExperimentSpec.from_json(data["spec"])
    except ValueError as error:
        raise ValueError(f"the kept state's experiment is not valid ({error})") from None
    if experiment_key(kept_spec) != key:
        raise ValueError("the kept state is of another experiment than the one on this page")
    if (problem := old_spline_problem(data.get("version"), kept_spec)) is not None:
        raise ValueError(f"the kept state cannot be used: {problem}")
    if not isinstance(data.get("state"), dict):
        raise ValueError("the kept state holds no training state")  # noqa: TRY004 (bad bytes: the documented ValueError)
    return data["state"]
