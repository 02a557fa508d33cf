"""The page's parts and sizes: the panels a teacher can hide, and one `Sizes` value for every view.

`PANELS` is the one list of hideable panels: the presentation card's checkboxes, the check of a
link's or a preset's `presentation.hidden`, and the page's visibility all read it. `Sizes` holds
every pixel and font size that projector mode changes, so a view never decides them itself.

Example:
    >>> [panel.name for panel in PANELS if panel.sidebar]
    ['experiment', 'target', 'base', 'training']
    >>> Sizes.of(projector=True).strip_px > Sizes.of(projector=False).strip_px
    True
    >>> Sizes.of(projector=False, main_px=main_width(820, sidebar_shown=False)).strip_px   # a tablet
    760
    >>> unknown_panels(("ledger", "sidebar"))[0][:50]
    "presentation.hidden[1]: 'sidebar' is not a panel; "
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Panel:
    name: str  # as a spec's presentation.hidden names it
    label: str  # as the presentation card offers it
    sidebar: bool = False


PANELS = (
    Panel("experiment", "Experiment", sidebar=True),
    Panel("target", "Target", sidebar=True),
    Panel("base", "Base", sidebar=True),
    Panel("training", "Training", sidebar=True),
    Panel("layers", "Layer editor"),
    Panel("overview", "Target, model, animation, loss"),
    Panel("density", "Density strip"),
    Panel("log_det", "ln|det J| strip"),
    Panel("samples", "Sample strip"),
    Panel("ledger", "Ledger and formula"),
)
PANEL_NAMES = tuple(panel.name for panel in PANELS)
SIDEBAR_PANELS = tuple(panel.name for panel in PANELS if panel.sidebar)


def unknown_panels(hidden: tuple[str, ...]) -> list[str]:
    """One message per name in `hidden` that is not a panel of this page (empty: all are)."""
    return [f"presentation.hidden[{i}]: {name!r} is not a panel; expected one of {', '.join(PANEL_NAMES)}"
            for i, name in enumerate(hidden) if name not in PANEL_NAMES]


SIDEBAR_PX = 380
FOLD_SIDEBAR_BELOW = 1000  # a window narrower than this opens with the sidebar folded away
MIN_STRIP_PX = 360


def main_width(window_px: int, sidebar_shown: bool) -> int:
    """The main area's width in a window `window_px` wide (the template's padding taken off)."""
    return window_px - (SIDEBAR_PX if sidebar_shown else 0) - 40


@dataclass(frozen=True)
class Sizes:
    """Every size that projector mode changes, in pixels."""

    font: int  # labels, axes, legends
    title_font: int
    text_font: int  # status line, ledger, explanations
    strip_px: int  # a strip's width (fits beside the sidebar on a 1600-pixel screen)
    max_cell_px: int  # at most this wide a panel of a strip
    colorbar_px: int
    square_px: int  # target, model, animation
    loss_px: tuple[int, int]
    button_px: int  # height of Play, Step, Reset

    @classmethod
    def of(cls, projector: bool, main_px: int | None = None) -> Sizes:
        """The sizes for projector mode or not, with strips no wider than `main_px`, the width of
        the main area where it is known."""
        if projector:  # a 1920-pixel projector, usually with the sidebar hidden
            sizes = cls(font=20, title_font=22, text_font=21, strip_px=1560, max_cell_px=320, colorbar_px=130,
                        square_px=360, loss_px=(520, 390), button_px=60)
        else:
            sizes = cls(font=13, title_font=15, text_font=15, strip_px=1180, max_cell_px=200, colorbar_px=90,
                        square_px=250, loss_px=(380, 280), button_px=44)
        if main_px is not None and main_px - 20 < sizes.strip_px:
            sizes = replace(sizes, strip_px=max(MIN_STRIP_PX, main_px - 20))
        return sizes

    @property
    def font_css(self) -> str:
        return f"{self.font}px"

    @property
    def title_css(self) -> str:
        return f"{self.title_font}px"
