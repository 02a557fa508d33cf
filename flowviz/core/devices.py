"""Devices by name: "cpu", "cuda", "cuda:1", "mps". The spec never holds one."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str) -> torch.device:
    """The torch device called `name`, or a ValueError that lists the devices this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; available: {', '.join(available_devices())}") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    if str(device) not in available_devices():
        raise ValueError(f"device {name!r} is not available here; available: {', '.join(available_devices())}")
    return device
