import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "flowviz", deadline=None, max_examples=int(os.environ.get("FLOWVIZ_EXAMPLES", "25")),
    suppress_health_check=[HealthCheck.too_slow], derandomize=True,
)
settings.load_profile("flowviz")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


from pathlib import Path

import pytest

PRESET_FILES = sorted(Path(__file__).parent.parent.joinpath("presets").glob("*.json"))


@pytest.fixture
def presets() -> list[Path]:
    return PRESET_FILES
