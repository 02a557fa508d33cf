"""The math core stands alone: importing all of it loads neither Panel nor Bokeh (nor matplotlib)."""

from __future__ import annotations

import subprocess
import sys

CORE_MODULES = [
    "flowviz.core.bases", "flowviz.core.build", "flowviz.core.checkpoint", "flowviz.core.devices", "flowviz.core.flow",
    "flowviz.core.grid", "flowviz.core.layers", "flowviz.core.limits", "flowviz.core.presets", "flowviz.core.registry",
    "flowviz.core.settings",
    "flowviz.core.spec", "flowviz.core.targets", "flowviz.core.training", "flowviz.cli",
]


def test_core_and_cli_import_no_ui_library():
    code = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}: importlib.import_module(name)\n"
        "loaded = sorted(m for m in ('panel', 'bokeh', 'param', 'matplotlib') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the core pulled in: {result.stdout.strip()}"
