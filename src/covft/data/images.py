"""Images in, 8-bit RGB out: every mode Pillow reads, decoded the way a person sees the image.

``Image.convert("RGB")`` (what LLaVA does) is wrong for several modes: it clips high bit depths
instead of scaling them (a 16-bit greyscale photo turns almost white, a float TIFF in [0, 1]
black), drops alpha without compositing (a fully transparent pixel becomes black, whatever
colour it was meant to show through) and ignores the EXIF orientation (a phone photo lies on
its side). :func:`open_image` fixes all three, :func:`to_rgb` the first two for an image already
decoded (the collator applies it to every PIL image it is given):

- **EXIF orientation** is applied when a file is opened (``ImageOps.exif_transpose``).
- **High bit depth** is scaled linearly onto 0..255 from its nominal range: 16-bit modes
  (``I;16*``) from 0..65535; 32-bit integers (``I``) from the range of the file's bit depth
  (TIFF ``BitsPerSample``), else from the smallest of 0..255, 0..65535 and 0..2^31-1 that holds
  the data (a 16-bit PGM opens as ``I`` with no depth recorded); negative values are black.
  Floats (``F``) are read as 0..1 (the TIFF convention) when every value lies there, else scaled
  from their own minimum and maximum (floats have no nominal range); non-finite values are black.
- **Transparency** (an alpha band, a palette or colour-key ``transparency``) is composited onto
  white, :data:`BACKGROUND`, as ``transformers``' ``convert_to_rgb`` does.
- Every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``) goes
  through Pillow's own conversion. ICC profiles are not applied (neither LLaVA nor transformers
  does).

:func:`open_image` opens a file and applies :func:`to_rgb`; Pillow's decompression-bomb guard
(an image whose header claims more than ``Image.MAX_IMAGE_PIXELS`` pixels) surfaces as the
:class:`ImageTooLargeError` it is, not as an unnamed crash.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = (255, 255, 255)
"""Colour transparent pixels are composited onto (white, as ``transformers.convert_to_rgb``)."""
_TIFF_BITS_PER_SAMPLE = 258


class ImageTooLargeError(ValueError):
    """An image whose header claims more pixels than Pillow's decompression-bomb limit."""


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as 8-bit RGB, upright (EXIF orientation) and converted by :func:`to_rgb`.

    Raises ``OSError`` if unreadable and :class:`ImageTooLargeError` for an image above
    ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    try:
        with Image.open(path) as handle:
            handle.load()
            bits = _declared_bits(handle)  # exif_transpose's copy no longer holds the file's tags
            return _convert(ImageOps.exif_transpose(handle), bits, BACKGROUND)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{exc} (Pillow's guard against decompression bombs, PIL.Image.MAX_IMAGE_PIXELS="
            f"{Image.MAX_IMAGE_PIXELS})"
        ) from exc


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """A decoded image as 8-bit RGB: high bit depth scaled, transparency composited.

    Orientation is the caller's (a file's EXIF tag is applied by :func:`open_image`, where the
    file is read), so an image that is already RGB passes through unchanged.
    """
    return _convert(image, _declared_bits(image), background)


def _convert(image: Image.Image, bits: int | None, background: tuple[int, int, int]) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _scaled_to_8_bit(image, bits)
    if image.has_transparency_data:
        rgba = image.convert("LA").convert("RGBA") if image.mode == "La" else image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _declared_bits(image: Image.Image) -> int | None:
    """Bits per sample a TIFF file declares (``None`` for other formats)."""
    bits = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE)
    if isinstance(bits, tuple):
        bits = bits[0]
    return int(bits) if bits else None


def _scaled_to_8_bit(image: Image.Image, bits: int | None) -> Image.Image:
    """A single-band high-bit-depth image (``I;16*``, ``I``, ``F``) as ``L``, scaled, never clipped."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        in_unit_range = values.size == 0 or (values.min() >= 0.0 and values.max() <= 1.0)
        low, high = (0.0, 1.0) if in_unit_range else (float(values.min()), float(values.max()))
    else:
        low, high = 0.0, float(_nominal_maximum(image.mode, bits, values))
    scaled = np.clip((values - low) / (high - low if high > low else 1.0), 0.0, 1.0) * 255.0
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def _nominal_maximum(mode: str, bits: int | None, values: np.ndarray) -> int:
    """The largest value the image's integer sample format can hold."""
    if mode.startswith("I;16"):
        return 2**16 - 1
    if bits:
        return 2 ** min(bits, 31) - 1
    peak = values.max() if values.size else 0
    return next(limit for limit in (2**8 - 1, 2**16 - 1, 2**31 - 1) if peak <= limit)
