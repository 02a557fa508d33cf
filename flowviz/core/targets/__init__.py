"""Targets: sample-based toys, the energies U1–U4, pictures, and user point sets (`TARGETS`, name -> class)."""

from flowviz.core.targets import energies, picture, points, toys  # noqa: F401  (registers)
from flowviz.core.targets.base import TARGETS, Target, TargetInfo
from flowviz.core.targets.energies import Energy
from flowviz.core.targets.picture import Picture
from flowviz.core.targets.points import Points

__all__ = ["TARGETS", "Energy", "Picture", "Points", "Target", "TargetInfo"]
