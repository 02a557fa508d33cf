"""The shipped presets, found by name or by path, from a checkout or from an installed wheel.

The preset files live in the repository's top-level `presets/` folder; the wheel carries them as
`flowviz/presets/` (pyproject maps the one onto the other), so the same names work wherever
flowviz runs: `flowviz train spline-8gaussians` from any folder.

Example:
    >>> preset_path("realnvp-moons").name
    'realnvp-moons.json'
    >>> ExperimentSpec.load(preset_path("realnvp-moons")).title == preset_files()["realnvp-moons"][0]
    True
    >>> preset_path("no-such-preset")
    Traceback (most recent call last):
    ...
    flowviz.core.settings.SpecError: preset: no preset or file named 'no-such-preset'; `flowviz presets` lists the names
"""

from __future__ import annotations

import re
from pathlib import Path

from flowviz.core.settings import SpecError
from flowviz.core.spec import ExperimentSpec

_PACKAGE = Path(__file__).resolve().parent.parent
DEFAULT_PRESET = "realnvp-moons"  # what a page, `flowviz serve` and `flowviz.explore` open without one


def presets_dir() -> Path:
    """The folder of shipped presets: inside the installed package, else the checkout's `presets/`."""
    installed = _PACKAGE / "presets"
    return installed if installed.is_dir() else _PACKAGE.parent / "presets"


def preset_path(name_or_path: str | Path) -> Path:
    """A preset file: an existing path as it is, else the shipped preset of that name (with or
    without `.json`). Raises SpecError naming what was asked for when there is neither."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = presets_dir() / (path.name if path.suffix == ".json" else f"{path.name}.json")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise SpecError("preset", f"no preset or file named '{name_or_path}'; `flowviz presets` lists the names")


def preset_files() -> dict[str, tuple[str, Path]]:
    """Shipped preset name -> (title, file), in file-name order with numbers as numbers (k2, k8, k32).
    A broken file is left out: reporting it is `flowviz check`'s and the tests' job, not a picker's."""
    found = {}
    for path in sorted(presets_dir().glob("*.json"), key=_natural):
        try:
            found[path.stem] = (ExperimentSpec.load(path).title, path)
        except SpecError:
            continue
    return found


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]
