"""A read-only registry of named classes, each carrying an `info` record (name, title, settings...).

Layers, bases and targets each keep one; the UI builds its palettes and forms from them.

Example:
    >>> from collections import namedtuple
    >>> Info = namedtuple("Info", "name title")
    >>> LAYERS = Registry("layer")
    >>> @LAYERS.register(Info("swap", "Swap coordinates"))
    ... class Swap: ...
    >>> LAYERS["swap"].info.title
    'Swap coordinates'
    >>> list(LAYERS)
    ['swap']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Mapping[str, T], Generic[T]):
    """Filled once, at import, by the `register` decorator; a plain read-only mapping after that."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, T] = {}

    def register(self, info: Any) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if info.name in self._classes:
                raise ValueError(f"{self.kind} {info.name!r} registered twice")
            cls.info = info
            self._classes[info.name] = cls
            return cls

        return add

    def __getitem__(self, name: str) -> T:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)
