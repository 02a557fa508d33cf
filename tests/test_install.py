"""flowviz as a user installs it: the wheel built from this checkout, installed into a fresh virtual
environment and run from another folder, serves the explorer and trains a preset by name."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import venv
from importlib.metadata import version

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Reads the served page's document, as a browser would get it, and prints the layer types in its stack.
PULL = """
import sys
import panel, panel.models.katex, flowviz.ui.explorer  # registers the page's model types
from bokeh.client import pull_session
with pull_session(url=sys.argv[1]) as session:
    stacks = [m for m in session.document.models if type(m).__name__.startswith("LayerStack")]  # its data model
    print(sorted({item["type"] for stack in stacks for item in stack.items}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh environment with the wheel installed, an empty folder to run it from)."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # a copy: building in the checkout would leave (and reuse) its build/ folder
    for part in ("flowviz", "presets"):
        shutil.copytree(os.path.join(ROOT, part), source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, part), source / part)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
                   check=True)
    (wheel,) = (work / "dist").glob("flowviz-*.whl")
    venv.create(work / "env", with_pip=True)
    python = str(work / "env" / "bin" / "python")
    torch = version("torch").split("+")[0]  # the CPU wheel this checkout runs on: no CUDA downloads
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", f"torch=={torch}",
                    str(wheel)], check=True)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return python, elsewhere


def _run(installed, *args, timeout=300):
    python, folder = installed
    return subprocess.run([python, "-m", "flowviz", *args], cwd=folder, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_the_installed_wheel_is_used_and_carries_the_presets(installed):
    python, folder = installed
    where = subprocess.run([python, "-c", "import flowviz; print(flowviz.__file__)"], cwd=folder,
                           capture_output=True, text=True, check=True).stdout
    assert "site-packages" in where and ROOT not in where
    listed = _run(installed, "presets")
    assert listed.returncode == 0, listed.stderr
    assert "spline-8gaussians" in listed.stdout and "Rational-quadratic splines on 8 Gaussians" in listed.stdout
    assert _run(installed, "check", "realnvp-moons").returncode == 0


@pytest.mark.slow
def test_the_installed_wheel_trains_a_preset_by_name(installed):
    result = _run(installed, "train", "spline-8gaussians", "--steps", "20")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["steps"] == 20 and metrics["kl"] > 0
    assert "step 20/20" in result.stderr  # piped: progress lines, not a bar
    picture = _run(installed, "train", "spline-smiley", "--steps", "5", "--quiet")  # the wheel carries the pictures
    assert picture.returncode == 0 and json.loads(picture.stdout.strip().splitlines()[-1])["kl"] > 0, picture.stderr
    unknown = _run(installed, "train", "no-such-preset")
    assert unknown.returncode == 2 and "flowviz presets" in unknown.stderr


@pytest.mark.slow
def test_the_installed_wheel_serves_the_explorer_on_a_preset(installed):
    python, folder = installed
    port = _free_port()
    server = subprocess.Popen([python, "-m", "flowviz", "serve", "spline-8gaussians", "--port", str(port),
                               "--address", "127.0.0.1"], cwd=folder, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not _listening(port):
            assert server.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.2)
        page = subprocess.run([python, "-c", PULL, f"http://127.0.0.1:{port}/app"], cwd=folder,
                              capture_output=True, text=True, timeout=120, check=False)
        assert page.returncode == 0, page.stderr
        assert page.stdout.strip() == "['spline_coupling']"  # the preset's stack, not the default's
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    assert "Traceback" not in log, log
