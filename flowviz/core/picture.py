r"""Read a picture (PNG or JPEG) into a small grey image, and pack it into the spec and back.

An uploaded picture becomes the `image` target's density. Reading it is careful: the file size and the
pixel count are checked before anything is decoded (a decompression bomb is refused by its header),
only PNG and JPEG are opened, EXIF is ignored (no rotation, no metadata), transparency counts as white,
and the result is box-filtered down to at most `MAX_SIDE` pixels a side, so a link or a preset can
carry it. Whatever is wrong, `read_picture` raises a `PictureError` that says what and what to do.

Example:
    >>> grey = np.full((3, 5), 255, np.uint8); grey[1, 2] = 0
    >>> back = decode_picture(encode_picture(grey))
    >>> back.shape, int(back[1, 2]), bool((back == grey).all())
    ((3, 5), 0, True)
    >>> read_picture(b"GIF89a...", "cat.gif")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    flowviz.core.picture.PictureError: cat.gif is not a PNG or JPEG picture. Upload a PNG or JPEG ...
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import PurePath

import numpy as np
from PIL import Image, UnidentifiedImageError

from flowviz.core.pointfile import MAX_UPLOAD_BYTES

MAX_SIDE = 128  # the spec's picture: at most this many pixels a side (a 128² PNG packs into a link)
MAX_PIXELS = 50_000_000  # an upload's header may claim at most this many pixels (a 50-megapixel photo)
MAX_PACKED_CHARS = 64_000  # a 128² grey PNG in base64 is at most ~22 000 characters
PICTURE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_HOW_TO = "Upload a PNG or JPEG picture (any size up to 50 megapixels; it is shrunk to 128 pixels a side)."


class PictureError(ValueError):
    """The picture cannot be used; the message says what is wrong and what to do."""


def is_picture(data: bytes, filename: str = "") -> bool:
    """Whether an upload is meant as a picture (by its extension, or its first bytes), not as points."""
    return PurePath(filename).suffix.lower() in PICTURE_EXTENSIONS or bytes(data[:8]).startswith(_MAGIC)


def read_picture(data: bytes, filename: str = "", formats: tuple[str, ...] = ("PNG", "JPEG"),
                 shrink: bool = True) -> np.ndarray:
    """The picture in `data` as grey levels (uint8, 0 black to 255 white), at most MAX_SIDE a side:
    a larger one is shrunk, or with `shrink=False` refused (a spec must hold what it shows)."""
    name = filename or "the file"
    if len(data) > MAX_UPLOAD_BYTES:
        raise PictureError(f"{name} is {len(data) / 2**20:.1f} MiB; at most {MAX_UPLOAD_BYTES // 2**20} MiB can be "
                           f"uploaded. {_HOW_TO}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size ourselves, below
        try:
            image = Image.open(io.BytesIO(bytes(data)), formats=formats)
        except Image.DecompressionBombError:  # Pillow's own ceiling, far above ours: its header claims more
            raise PictureError(f"{name} claims far more than {MAX_PIXELS // 1_000_000} megapixels, so it is not "
                               f"read. Shrink it first. {_HOW_TO}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            kinds = " or ".join(formats)
            raise PictureError(f"{name} is not a {kinds} picture. {_HOW_TO}") from None
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise PictureError(f"{name} is {width:,}×{height:,} pixels; at most {MAX_PIXELS // 1_000_000} megapixels "
                               f"are read. Shrink it first. {_HOW_TO}")
        if width < 1 or height < 1:
            raise PictureError(f"{name} has no pixels. {_HOW_TO}")
        try:
            if image.format == "JPEG":
                image.draft("L", (MAX_SIDE * 2, MAX_SIDE * 2))  # decode a big JPEG at a fraction of its size
            grey = _grey(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise PictureError(f"{name} is damaged (its pixels do not decode). {_HOW_TO}") from None
    scale = min(1.0, MAX_SIDE / max(grey.size))
    if scale < 1.0 and not shrink:
        raise PictureError(f"{name} is {grey.width}×{grey.height} pixels; at most {MAX_SIDE} a side are allowed")
    if scale < 1.0:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    return np.asarray(grey, np.uint8).copy()


def _grey(image: Image.Image) -> Image.Image:
    """Grey levels of any mode: transparency shows the white behind it, 16-bit and float images are
    scaled by their largest value."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, np.float64)
        top = float(values.max()) if values.size and np.isfinite(values).all() else 0.0
        scaled = np.clip(values / top * 255, 0, 255) if top > 0 else np.zeros_like(values)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return image.convert("L")


def encode_picture(grey: np.ndarray) -> str:
    """Grey levels as the spec keeps them: a greyscale PNG in base64."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(grey, np.uint8), "L").save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_picture(text: str) -> np.ndarray:
    """The grey levels a spec's picture holds; PictureError if it is not a PNG of at most MAX_SIDE a side."""
    if not isinstance(text, str):
        raise PictureError(f"expected a PNG in base64, got {type(text).__name__}")
    if len(text) > MAX_PACKED_CHARS:
        raise PictureError(f"is {len(text):,} characters long; at most {MAX_PACKED_CHARS:,} are read")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PictureError("is not base64; it should hold a PNG picture in base64") from None
    return read_picture(data, "the picture", formats=("PNG",), shrink=False)
