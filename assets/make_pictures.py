"""Draw the built-in pictures of the `image` target (flowviz/core/targets/pictures/*.png).

Drawn at 8× and box-filtered down, so that edges come out as grey levels, not stairs:
    python assets/make_pictures.py
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parents[1] / "flowviz" / "core" / "targets" / "pictures"
SIDE, SCALE = 64, 8
BIG = SIDE * SCALE


def smiley() -> Image.Image:
    """A face: a ring, two eyes and a smile, dark on white."""
    image = Image.new("L", (BIG, BIG), 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((24, 24, BIG - 24, BIG - 24), outline=0, width=44)
    for x in (176, 336):
        draw.ellipse((x - 30, 150, x + 30, 240), fill=0)
    draw.arc((130, 170, BIG - 130, BIG - 110), start=20, end=160, fill=0, width=40)
    return image


def logo() -> Image.Image:
    """The letters "fv" over a grey wave (half as dense as the letters): flowviz's mark."""
    image = Image.new("L", (BIG, BIG), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=300)
    draw.text((BIG / 2, BIG * 0.42), "fv", font=font, fill=0, anchor="mm", stroke_width=14, stroke_fill=0)
    wave = [(x, BIG * 0.8 + 28 * math.sin(x / BIG * 4 * math.pi)) for x in range(40, BIG - 40, 4)]
    draw.line(wave, fill=128, width=36)
    return image


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in (("smiley", smiley), ("logo", logo)):
        draw().resize((SIDE, SIDE), Image.Resampling.BOX).save(OUT / f"{name}.png", optimize=True)
        print(OUT / f"{name}.png")


if __name__ == "__main__":
    main()
