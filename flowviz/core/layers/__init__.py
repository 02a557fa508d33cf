"""Invertible 2-D layers and their registry (`LAYERS`, name -> class; each class has `.info`)."""

from flowviz.core.layers import (  # noqa: F401  (registers)
    autoregressive,
    continuous,
    coupling,
    elementwise,
    linear,
    normalization,
    residual,
)
from flowviz.core.layers.base import LAYERS, IterativeInverse, Layer, LayerInfo

__all__ = ["LAYERS", "IterativeInverse", "Layer", "LayerInfo", "make_layer"]


def make_layer(name: str, settings: dict | None = None) -> Layer:
    """Build a registered layer from validated settings (see `flowviz.core.spec`)."""
    return LAYERS[name](**(settings or {}))
