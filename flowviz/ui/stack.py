"""The layer stack editor: drag layer types from a palette into the stack, reorder, switch off, remove.

The browser side (stack.js) only sends actions; `LayerStack` applies them to `items`, a list of
plain dicts (id, type, settings, enabled), so the same edits work from tests, keys and buttons.
Ids survive reordering: the explorer uses them to keep the weights of layers an edit did not touch.

Example:
    >>> stack = LayerStack()
    >>> stack.act({"action": "add", "type": "planar"})
    >>> [item["type"] for item in stack.items]
    ['planar']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import param
from panel.custom import JSComponent

from flowviz.core.layers import LAYERS
from flowviz.core.limits import LIMITS
from flowviz.core.settings import validate_settings
from flowviz.core.spec import LayerSpec

_STYLE = """
:host { display: block; }
.fv-stack-editor { display: grid; grid-template-columns: minmax(200px, 1fr) minmax(220px, 1.2fr); gap: 4px 14px;
  font-size: 14px; }
.fv-head { font-weight: 600; color: #334; padding: 2px 2px 4px; }
.fv-palette { display: flex; flex-direction: column; gap: 4px; max-height: 300px; overflow-y: auto; padding-right: 4px; }
.fv-stack { list-style: none; margin: 0; padding: 6px; min-height: 120px; max-height: 300px; overflow-y: auto;
  border: 2px dashed #c5cbd6; border-radius: 8px; display: flex; flex-direction: column; gap: 4px; }
.fv-stack.fv-drop-target { border-color: #2a6fdb; background: #f1f6ff; }
.fv-card { display: flex; align-items: center; gap: 6px; border: 1px solid #d4d9e2; border-radius: 6px;
  background: #fff; padding: 4px 6px; cursor: grab; user-select: none; -webkit-user-select: none; }
/* A finger drags a stack row up and down, and a palette card sideways into the stack (vertical
   swipes still scroll the palette). */
.fv-stack-item { touch-action: none; }
.fv-palette-item { touch-action: pan-y; }
.fv-ghost { position: fixed; z-index: 1000; pointer-events: none; opacity: 0.85; box-shadow: 0 4px 14px #0003;
  margin: 0; }
.fv-drop-before { box-shadow: 0 -3px 0 #2a6fdb; }
.fv-card:focus { outline: 3px solid #2a6fdb; outline-offset: 1px; }
.fv-palette-item:hover { background: #f5f8fd; }
.fv-text { flex: 1; min-width: 0; }
.fv-title { font-weight: 600; color: #1d2433; }
.fv-desc { color: #5b6475; font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.fv-stack-item.fv-selected { border-color: #2a6fdb; box-shadow: 0 0 0 2px #2a6fdb33; background: #f1f6ff; }
.fv-stack-item.fv-off { opacity: 0.5; }
.fv-stack-item.fv-off .fv-title { text-decoration: line-through; }
.fv-drop-zone { color: #8a93a3; font-size: 12px; text-align: center; padding: 8px; border-radius: 6px; }
button { border: 1px solid #c5cbd6; background: #f7f8fa; border-radius: 4px; cursor: pointer; min-width: 26px;
  height: 26px; font-size: 15px; line-height: 1; }
button:hover:not(:disabled) { background: #e7edf7; }
button:disabled { opacity: 0.35; cursor: default; }
.fv-add { color: #1b6b2f; font-weight: 700; }
.fv-remove { color: #a11; }
.fv-toggle { width: 18px; height: 18px; }
"""


def summary(layer_type: str, settings: dict[str, Any]) -> str:
    """A short line of the settings that differ from the defaults, or the layer's description."""
    info = LAYERS[layer_type].info
    changed = [f"{s.name} {settings[s.name]}" for s in info.settings if settings.get(s.name, s.default) != s.default]
    return " · ".join(changed) if changed else info.description


class LayerStack(JSComponent):
    """Palette + stack. `items`: [{id, type, title, summary, settings, enabled}], base side first."""

    palette = param.List(default=[], doc="every registered layer type: name, title, description, reference")
    items = param.List(default=[], doc="the stack, base side first")
    selected = param.Integer(default=None, allow_None=True, doc="id of the layer whose settings are open")
    focus = param.Integer(default=None, allow_None=True, doc="stack position to keep keyboard focus on")
    message = param.String(default="", doc="why the last action was refused, if it was")

    _esm = Path(__file__).parent / "stack.js"
    _stylesheets: ClassVar[list[str]] = [_STYLE]

    def __init__(self, **params):
        params.setdefault("palette", [
            {"name": name, "title": entry.info.title, "description": entry.info.description, "reference": entry.info.reference}
            for name, entry in LAYERS.items()
        ])
        super().__init__(**params)
        self._next_id = len(self.items)  # ids are never reused, so a removed layer's weights never come back

    # -- building items ----------------------------------------------------------------------------
    @staticmethod
    def item(layer_id: int, layer: LayerSpec) -> dict[str, Any]:
        return {"id": layer_id, "type": layer.type, "title": LAYERS[layer.type].info.title,
                "summary": summary(layer.type, layer.settings), "settings": dict(layer.settings), "enabled": layer.enabled}

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        return tuple(LayerSpec(i["type"], dict(i["settings"]), i["enabled"]) for i in self.items)

    def ids(self) -> list[int]:
        return [i["id"] for i in self.items]

    def _new_id(self) -> int:
        self._next_id = max(self._next_id, max(self.ids(), default=-1) + 1) + 1
        return self._next_id - 1

    def set_layers(self, layers: tuple[LayerSpec, ...], ids: list[int] | None = None) -> None:
        ids = list(range(len(layers))) if ids is None else ids
        self.items = [self.item(i, layer) for i, layer in zip(ids, layers)]
        if self.selected not in ids:
            self.selected = None

    def update_settings(self, layer_id: int, settings: dict[str, Any]) -> None:
        """New settings for one layer (validated); the layer gets a new id, so fresh weights."""
        index = self.ids().index(layer_id)
        old = self.items[index]
        settings = validate_settings(LAYERS[old["type"]].info.settings, settings, f"layers[{index}].settings")
        new_id = self._new_id()
        items = list(self.items)
        items[index] = self.item(new_id, LayerSpec(old["type"], settings, old["enabled"]))
        self.items = items
        self.selected = new_id

    # -- actions from the browser (and from tests) -------------------------------------------------
    def _handle_msg(self, data: Any) -> None:
        if isinstance(data, dict):
            self.act(data)

    def act(self, action: dict[str, Any]) -> None:
        """Apply one edit. Bad actions (a stale index, an unknown type) are refused with a message."""
        items = list(self.items)
        kind = action.get("action")
        self.message = ""
        try:
            if kind == "add":
                layer_type = action.get("type")
                if layer_type not in LAYERS:
                    raise ValueError(f"unknown layer type {layer_type!r}")
                if len(items) >= LIMITS.max_layers:
                    raise ValueError(f"a flow has at most {LIMITS.max_layers} layers here; remove one first")
                index = self._index(action.get("index", len(items)), len(items) + 1)
                layer = LayerSpec(layer_type, validate_settings(LAYERS[layer_type].info.settings, {}, "settings"))
                new = self.item(self._new_id(), layer)
                items.insert(index, new)
                self.items, self.selected, self.focus = items, new["id"], index
            elif kind == "move":
                source = self._index(action.get("from"), len(items))
                to = self._index(action.get("to"), len(items) + 1, clamp=True)
                moved = items.pop(source)
                to = to - 1 if to > source else to
                items.insert(to, moved)
                self.items, self.focus = items, to
            elif kind == "remove":
                index = self._index(action.get("index"), len(items))
                removed = items.pop(index)
                self.items, self.focus = items, min(index, len(items) - 1) if items else None
                if self.selected == removed["id"]:
                    self.selected = None
            elif kind == "toggle":
                index = self._index(action.get("index"), len(items))
                items[index] = {**items[index], "enabled": not items[index]["enabled"]}
                self.items, self.focus = items, index
            elif kind == "select":
                index = self._index(action.get("index"), len(items))
                self.selected, self.focus = items[index]["id"], index
            else:
                raise ValueError(f"unknown action {kind!r}")
        except ValueError as error:
            self.message = str(error)

    @staticmethod
    def _index(value: Any, size: int, clamp: bool = False) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a position, got {value!r}")  # noqa: TRY004 (act() reports ValueErrors)
        if clamp:
            return min(max(value, 0), size - 1)
        if not 0 <= value < size:
            raise ValueError(f"position {value} is outside the stack (it has changed; try again)")
        return value
